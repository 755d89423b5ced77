/**
 * The bytes of an event on the streams (http/event-frames.ts), for events the real memory store
 * appended: made once per event for every stream that sends it, and kept for the recent events only,
 * not for every event the store keeps.
 */
import { describe, expect, it } from 'vitest';
import { framesKept, RECENT_FRAMES, sseEventMessage, webSocketEventFrame } from '../../src/http/event-frames.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { newEvent, runRecord, sessionRecord } from '../store/contract.js';

async function appended(count: number) {
  const store = createMemoryStore({ eventsPerSession: count });
  const session = sessionRecord();
  await store.sessions.create(session);
  const run = runRecord(session);
  const events = [];
  for (let i = 0; i < count; i++) events.push(await store.events.append(newEvent(run, { payload: { content: `line ${i}\n`, index: i } })));
  return events;
}

describe('event frames', () => {
  it("makes an event's WebSocket frame and SSE message once, whichever stream asks", async () => {
    const [event] = await appended(1);
    const frame = webSocketEventFrame(event!);
    expect(webSocketEventFrame(event!)).toBe(frame);
    expect(JSON.parse(frame.toString('utf8'))).toEqual({ type: 'event', event });
    const message = sseEventMessage(event!);
    expect(sseEventMessage(event!)).toBe(message);
    expect(message.toString('utf8')).toBe(`id: ${event!.seq}\nevent: assistant_delta\ndata: ${JSON.stringify(event)}\n\n`);
  });

  it('keeps the bytes of the most recent events only, and makes an older one again, right', async () => {
    const events = await appended(RECENT_FRAMES + 100);
    for (const event of events) {
      webSocketEventFrame(event);
      sseEventMessage(event);
    }
    expect(framesKept()).toEqual({ webSocket: RECENT_FRAMES, sse: RECENT_FRAMES });

    const newest = events.at(-1)!;
    expect(webSocketEventFrame(newest)).toBe(webSocketEventFrame(newest));
    const oldest = events[0]!;
    expect(JSON.parse(webSocketEventFrame(oldest).toString('utf8'))).toEqual({ type: 'event', event: oldest });
    expect(sseEventMessage(oldest).toString('utf8')).toContain(`data: ${JSON.stringify(oldest)}\n\n`);
    expect(framesKept()).toEqual({ webSocket: RECENT_FRAMES, sse: RECENT_FRAMES });
  });
});
