import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { WebSocket } from 'ws';
import type { AsmApp } from '../../app.js';
import { AsmError, badField } from '../../errors/kinds.js';
import type { LaneEvent } from '../../lanes/types.js';
import { ClientFrame, EventStreamQuery, WS_CLOSE_EVENTS_UNAVAILABLE, WS_CLOSE_SLOW_CONSUMER } from '../../schemas/ws.js';
import { EVENT_KINDS, type AsmEvent, type EventKind } from '../../schemas/events.js';
import type { ServerFrame } from '../../schemas/ws.js';
import type { TenantRole } from '../../tenants.js';
import type { AsmMetrics } from '../metrics.js';
import { followOwnQueueEvents } from '../queue-events.js';
import { followEvents } from '../replay.js';
import { followOwnSessions } from '../own-events.js';
import { fromFastifyError } from '../../errors/from-fastify.js';
import { describe } from '../validation.js';
import { webSocketEventFrame } from '../event-frames.js';

/**
 * GET /v1/events (WebSocket). One subscription per connection, set by the query string and replaced by
 * `subscribe` frames. With a session (or run) and `after`, the stream replays from the store and then
 * goes live with no gap and no duplicate; without `after` it is live from now. Without a session it
 * carries every session of the caller's tenant, live only.
 *
 * `queue_events` adds the queue lanes' events: all of them for an admin, those of the caller's own
 * runs for a tenant (queue-events.ts).
 *
 * A tenant holds at most its `connections` quota of streams at once (WebSocket and SSE together,
 * across the deployment); the upgrade over it is refused with 429 quota_exceeded.
 *
 * Server frames: {type:"event", event} · {type:"queue_event", event} · {type:"subscribed", …} ·
 * {type:"ack", request_id, …} · {type:"error", request_id?, error}.
 * A client more than ASM_WS_MAX_BUFFER_BYTES behind is closed with code 4008 and the reason
 * {"reason":"slow_consumer","last_seq":N}: resume with after=N. A stream whose store cannot serve it
 * (Redis away) is closed the same way with code 1011 and reason "events_unavailable".
 */

interface Subscription {
  sessionId?: string;
  runId?: string;
  kinds?: Set<EventKind>;
  after?: number;
  queueEvents?: boolean;
}

const clientFrameCheck = TypeCompiler.Compile(ClientFrame);
/** One checker per frame type, so an invalid frame of a known type is reported by its own field, not as "Expected union value". */
const frameChecks = new Map(ClientFrame.anyOf.map((variant) => [variant.properties.type.const as string, TypeCompiler.Compile(variant)]));

function frameError(frame: unknown): AsmError {
  const type = (frame as { type?: unknown } | null)?.type;
  const check = typeof frame === 'object' && frame !== null && typeof type === 'string' ? frameChecks.get(type) : undefined;
  if (!check) return badField('type', `must be one of ${[...frameChecks.keys()].map((t) => JSON.stringify(t)).join(', ')}`);
  const first = check.Errors(frame).First();
  return badField(first?.path.replace(/^\//, '').replace(/\//g, '.') || 'frame', first ? describe(first) : 'invalid frame');
}

class EventStreamConnection {
  private stopFollowing = () => {};
  private stopQueueEvents = () => {};
  private lastSeq = 0;
  private closed = false;
  private heartbeat: NodeJS.Timeout;
  private alive = true;
  private readonly uncount: () => void;

  constructor(
    private readonly socket: WebSocket,
    private readonly app: AsmApp,
    private readonly tenant: string,
    private readonly role: TenantRole,
    private readonly metrics: AsmMetrics | undefined,
  ) {
    this.uncount = metrics?.streamOpened('websocket') ?? (() => {});
    socket.on('message', (data) => void this.onFrame(data.toString()));
    socket.on('pong', () => (this.alive = true));
    socket.on('close', () => this.dispose());
    socket.on('error', () => this.dispose());
    this.heartbeat = setInterval(() => {
      if (!this.alive) return socket.terminate();
      this.alive = false;
      socket.ping();
    }, app.config.limits.wsHeartbeatMs);
  }

  async subscribe(sub: Subscription): Promise<void> {
    this.unsubscribe();
    if (sub.runId) {
      const run = await this.app.sessions.getRun(this.tenant, sub.runId);
      if (sub.sessionId && sub.sessionId !== run.session_id) throw badField('session_id', `run ${sub.runId} is not in session ${sub.sessionId}`);
      sub.sessionId = run.session_id;
    } else if (sub.sessionId) {
      await this.app.sessions.getSession(this.tenant, sub.sessionId);
    } else if (sub.after !== undefined) {
      throw badField('after', 'replay needs session_id or run_id (seq is per session)');
    }

    const deliver = async (event: AsmEvent, phase: 'replay' | 'live') => {
      if (sub.kinds && !sub.kinds.has(event.kind)) return;
      if (phase === 'replay') await this.writable();
      if (this.send(webSocketEventFrame(event))) this.lastSeq = event.seq;
    };
    if (sub.sessionId) {
      const after = sub.after ?? (await this.app.store.events.lastSeq(sub.sessionId));
      this.lastSeq = after;
      const follower = followEvents(
        this.app.store.events,
        { sessionId: sub.sessionId, runId: sub.runId, after, pageSize: this.app.config.limits.eventPageMax },
        deliver,
        (err) => {
          this.app.logger.warn({ err, sessionId: sub.sessionId }, 'event stream failed; closing it so the client resumes');
          this.closeToResume(WS_CLOSE_EVENTS_UNAVAILABLE, 'events_unavailable');
        },
      );
      this.stopFollowing = () => follower.stop();
      await follower.live;
    } else {
      this.stopFollowing = followOwnSessions(this.app.store.events, this.app.store.sessions, this.tenant, (event) => void deliver(event, 'live'));
    }
    if (sub.queueEvents) {
      // An admin sees the lanes as they are; a tenant only the commands of its own runs (queue-events.ts).
      const deliver = (event: LaneEvent) => this.send({ type: 'queue_event', event });
      this.stopQueueEvents =
        this.role === 'admin' ? this.app.engine.subscribe(deliver) : followOwnQueueEvents(this.app.engine, this.app.store.runs, this.tenant, deliver);
    }
    this.send({ type: 'subscribed', session_id: sub.sessionId ?? null, run_id: sub.runId ?? null, last_seq: this.lastSeq });
  }

  private async onFrame(text: string): Promise<unknown> {
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      return this.sendError(badField('frame', 'not valid JSON'));
    }
    if (!clientFrameCheck.Check(frame)) return this.sendError(frameError(frame), requestIdOf(frame));
    const requestId = 'request_id' in frame ? frame.request_id : undefined;
    try {
      switch (frame.type) {
        case 'subscribe':
          return await this.subscribe({
            sessionId: frame.session_id,
            runId: frame.run_id,
            kinds: frame.kinds ? new Set(frame.kinds) : undefined,
            after: frame.after,
            queueEvents: frame.queue_events,
          });
        case 'unsubscribe':
          this.unsubscribe();
          return this.send({ type: 'ack', request_id: null, unsubscribed: true });
        case 'approve': {
          const approval = await this.app.sessions.decideApproval(this.tenant, frame.approval_id, frame.decision, frame.reason ?? null);
          return this.send({ type: 'ack', request_id: requestId ?? null, approval });
        }
        case 'interrupt': {
          const run = await this.app.sessions.interruptRun(this.tenant, frame.run_id);
          return this.send({ type: 'ack', request_id: requestId ?? null, run: { id: run.id, state: run.state } });
        }
      }
    } catch (err) {
      this.sendError(fromFastifyError(err), requestId);
    }
  }

  /** A replay waits for the client to read rather than overflowing it; a dead peer is ended by the heartbeat. */
  private async writable(): Promise<void> {
    while (!this.closed && this.socket.bufferedAmount > this.app.config.limits.wsBufferBytes / 2) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** False when the frame was not sent (closed, or the client fell too far behind and is being closed). */
  private send(message: ServerFrame | Buffer): boolean {
    if (this.closed) return false;
    if (this.socket.bufferedAmount > this.app.config.limits.wsBufferBytes) {
      this.closeToResume(WS_CLOSE_SLOW_CONSUMER, 'slow_consumer');
      return false;
    }
    if (Buffer.isBuffer(message)) this.socket.send(message, { binary: false });
    else this.socket.send(JSON.stringify(message));
    return true;
  }

  /** Close with the last seq sent, from which the client resumes (`after`). */
  private closeToResume(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (code === WS_CLOSE_SLOW_CONSUMER) this.metrics?.slowConsumerClosed('websocket');
    this.socket.close(code, JSON.stringify({ reason, last_seq: this.lastSeq }));
    this.dispose();
  }

  sendError(error: AsmError, requestId?: string): void {
    this.send({ type: 'error', request_id: requestId ?? null, error: error.toBody() });
  }

  private unsubscribe(): void {
    this.stopFollowing();
    this.stopQueueEvents();
    this.stopFollowing = () => {};
    this.stopQueueEvents = () => {};
  }

  private dispose(): void {
    this.closed = true;
    clearInterval(this.heartbeat);
    this.unsubscribe();
    this.uncount();
  }
}

function requestIdOf(frame: unknown): string | undefined {
  const id = (frame as { request_id?: unknown } | null)?.request_id;
  return typeof id === 'string' ? id : undefined;
}

function parseKinds(kinds: string | undefined): Set<EventKind> | undefined {
  if (kinds === undefined) return undefined;
  const list = kinds.split(',').map((k) => k.trim()).filter(Boolean);
  const unknown = list.find((k) => !(EVENT_KINDS as string[]).includes(k));
  if (unknown) throw badField('query.kinds', `unknown event kind "${unknown}"`);
  return new Set(list as EventKind[]);
}

export const eventStreamRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp; metrics?: AsmMetrics }> = async (fastify, { app, metrics }) => {
  // One of the tenant's streams (its `connections` quota) is held before the upgrade, so the one over
  // it gets a 429 rather than a socket; it is let go when the connection closes, whatever ends it.
  const holdConnection = async (request: FastifyRequest) => {
    const release = await app.sessions.holdConnection(request.tenant);
    request.raw.socket.once('close', release);
  };
  fastify.get('/events', { websocket: true, preHandler: holdConnection, schema: { tags: ['events'], querystring: EventStreamQuery, hide: true } }, (socket, request) => {
    const query = request.query as EventStreamQuery;
    const connection = new EventStreamConnection(socket, app, request.tenant, request.role, metrics);
    let initial: Subscription;
    try {
      initial = { sessionId: query.session_id, runId: query.run_id, kinds: parseKinds(query.kinds), after: query.after, queueEvents: query.queue_events };
    } catch (err) {
      connection.sendError(fromFastifyError(err));
      return;
    }
    connection.subscribe(initial).catch((err) => connection.sendError(fromFastifyError(err)));
  });
};
