import type { AsmEvent } from '../schemas/events.js';
import type { ServerFrame } from '../schemas/ws.js';
import { RecentMap } from '../store/recent-map.js';

/**
 * An event's bytes on the streams that follow it (a WebSocket frame, an SSE message), made once per
 * event however many streams send it: every stream following a session or run is handed the same
 * event object (the store's feed and replay.ts deliver one to all).
 *
 * Only the most recent events' bytes are kept, so what this holds is bounded whoever else keeps an
 * event: keyed by the event for as long as it lives (a WeakMap), the bytes would last as long as any
 * holder of the event object, and the embedded store keeps those it publishes in its log. The streams
 * of one event send it within a few turns of the event loop, while it is among the last few hundred.
 */
export const RECENT_FRAMES = 512;

class RecentFrames {
  private readonly frames = new RecentMap<AsmEvent, Buffer>(RECENT_FRAMES);

  constructor(private readonly make: (event: AsmEvent) => string) {}

  of(event: AsmEvent): Buffer {
    let frame = this.frames.get(event);
    if (frame === undefined) this.frames.set(event, (frame = Buffer.from(this.make(event))));
    return frame;
  }

  get size(): number {
    return this.frames.size;
  }
}

const webSocket = new RecentFrames((event) => JSON.stringify({ type: 'event', event } satisfies ServerFrame));
const sse = new RecentFrames((event) => `id: ${event.seq}\nevent: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`);

/** The WebSocket frame of `event` (`{"type":"event","event":…}`, UTF-8, sent as a text frame). */
export const webSocketEventFrame = (event: AsmEvent): Buffer => webSocket.of(event);

/** The SSE message of `event`: its seq as the `id` a client resumes from (Last-Event-ID), its kind as the `event`. */
export const sseEventMessage = (event: AsmEvent): Buffer => sse.of(event);

/** How many events' bytes are kept, per transport (for the tests of the bound). */
export const framesKept = (): { webSocket: number; sse: number } => ({ webSocket: webSocket.size, sse: sse.size });
