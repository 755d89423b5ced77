/**
 * The WebSocket event stream (`GET /v1/events`, README "WebSocket event stream") with typed frames,
 * and resume by seq: a stream the server closes so that the client resumes (4008 slow consumer,
 * 1011 events unavailable) is reopened with `after` = the last seq received, so the events arrive
 * once each and in order across the reconnect.
 */
import WebSocket from 'ws';
import { WS_CLOSE_EVENTS_UNAVAILABLE, WS_CLOSE_SLOW_CONSUMER, type ClientFrame } from '../schemas/ws.js';
import type { components } from './openapi-types.js';

export type { ClientFrame } from '../schemas/ws.js';

type Event = components['schemas']['Event'];
type ErrorBody = components['schemas']['Error']['error'];

export type ServerFrame =
  | { type: 'event'; event: Event }
  | { type: 'queue_event'; event: { key: string; payload: unknown; timestamp: number } }
  | { type: 'subscribed'; session_id: string | null; run_id: string | null; last_seq: number }
  | { type: 'ack'; request_id: string | null; [field: string]: unknown }
  | { type: 'error'; request_id: string | null; error: ErrorBody };

export interface EventStreamOptions {
  /** The service's address, e.g. `http://127.0.0.1:8080` (the scheme becomes ws or wss). */
  baseUrl: string;
  /** An API key, sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  headers?: Record<string, string>;
  session_id?: string;
  run_id?: string;
  kinds?: Event['kind'][];
  /** Replay the stored events after this seq first (needs session_id or run_id). */
  after?: number;
  queue_events?: boolean;
  /** Reopen a stream the server closed to be resumed (needs session_id or run_id); default true. */
  resume?: boolean;
  /** At most this many reopenings in a row without an event in between (default 5). */
  maxResumes?: number;
}

const RESUMABLE_CLOSES = new Set([WS_CLOSE_SLOW_CONSUMER, WS_CLOSE_EVENTS_UNAVAILABLE]);

/** Opens the stream; `await stream.opened` to know the first connection is up. */
export function openEventStream(options: EventStreamOptions): EventStream {
  return new EventStream(options);
}

export class EventStream implements AsyncIterable<Event> {
  /** The seq of the last event received (or the server's cursor at subscription): where a resume starts. */
  lastSeq: number | undefined;
  /** How many times the stream was reopened. */
  resumes = 0;
  socket!: WebSocket;
  readonly opened: Promise<void>;
  /** The close that ended the stream for good (not one it resumed from). */
  readonly closed: Promise<{ code: number; reason: string }>;

  private readonly listeners = new Set<(frame: ServerFrame) => void>();
  private readonly pending: Event[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private closedByUser = false;
  private resumesInARow = 0;
  private finish!: (close: { code: number; reason: string }) => void;

  constructor(private readonly options: EventStreamOptions) {
    this.lastSeq = options.after;
    this.closed = new Promise((resolve) => (this.finish = resolve));
    this.opened = this.connect();
  }

  /** Calls `listener` with every server frame (events, acks, errors, queue events) until it is removed. */
  onFrame(listener: (frame: ServerFrame) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  send(frame: ClientFrame): void {
    this.socket.send(JSON.stringify(frame));
  }

  approve(approval_id: string, decision: 'allow' | 'allow_for_session' | 'deny', reason?: string): void {
    this.send({ type: 'approve', approval_id, decision, ...(reason !== undefined && { reason }) });
  }

  interrupt(run_id: string): void {
    this.send({ type: 'interrupt', run_id });
  }

  close(): void {
    this.closedByUser = true;
    this.socket.close();
  }

  /** The events in order, until the stream ends (closed by either side and not resumed). */
  async *[Symbol.asyncIterator](): AsyncIterator<Event> {
    for (;;) {
      const event = this.pending.shift();
      if (event) {
        yield event;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private url(): string {
    const { session_id, run_id, kinds, queue_events } = this.options;
    const query = new URLSearchParams();
    if (session_id) query.set('session_id', session_id);
    if (run_id) query.set('run_id', run_id);
    if (kinds?.length) query.set('kinds', kinds.join(','));
    if (this.lastSeq !== undefined) query.set('after', String(this.lastSeq));
    if (queue_events) query.set('queue_events', 'true');
    return `${this.options.baseUrl.replace(/^http/, 'ws').replace(/\/$/, '')}/v1/events?${query}`;
  }

  private connect(): Promise<void> {
    const { apiKey, headers } = this.options;
    const socket = new WebSocket(this.url(), { headers: { ...(apiKey && { authorization: `Bearer ${apiKey}` }), ...headers } });
    this.socket = socket;
    socket.on('message', (data) => this.receive(JSON.parse(data.toString()) as ServerFrame));
    socket.once('close', (code, reason) => this.onClose(code, reason.toString()));
    return new Promise((resolve, reject) => {
      socket.once('open', () => resolve());
      // Every error is followed by a close (handled above); after the open this only keeps it from being thrown.
      socket.on('error', reject);
    });
  }

  private receive(frame: ServerFrame): void {
    if (frame.type === 'event') {
      // A resume replays from the last seq received, so nothing arrives twice; this guards a repeat anyway.
      if (this.lastSeq !== undefined && frame.event.seq <= this.lastSeq) return;
      this.lastSeq = frame.event.seq;
      this.resumesInARow = 0;
      this.pending.push(frame.event);
      this.wakeReader();
    } else if (frame.type === 'subscribed') {
      this.lastSeq = Math.max(this.lastSeq ?? 0, frame.last_seq);
    }
    for (const listener of this.listeners) listener(frame);
  }

  private onClose(code: number, reason: string): void {
    const { resume = true, maxResumes = 5, session_id, run_id } = this.options;
    const resumable = resume && !this.closedByUser && (session_id || run_id) && RESUMABLE_CLOSES.has(code) && this.resumesInARow < maxResumes;
    if (resumable) {
      this.resumes++;
      this.resumesInARow++;
      // A failed reopening ends the stream with that failure's close (the new socket's own close event).
      this.connect().catch(() => {});
      return;
    }
    this.ended = true;
    this.wakeReader();
    this.finish({ code, reason });
  }

  private wakeReader(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
