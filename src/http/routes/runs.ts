import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import type { AsmApp } from '../../app.js';
import { badField } from '../../errors/kinds.js';
import { EventPage, EventsQuery, isTerminalRunState, Run, RunParams, type RunState } from '../../schemas/api.js';
import { TERMINAL_KINDS, type AsmEvent } from '../../schemas/events.js';
import type { AsmMetrics } from '../metrics.js';
import { sseEventMessage } from '../event-frames.js';
import { followEvents } from '../replay.js';
import { runEventsAfter } from '../../store/run-events.js';
import type { EventsJson } from '../../store/types.js';
import { errorResponses } from './sessions.js';

const DEFAULT_PAGE = 100;

export const runRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp; metrics?: AsmMetrics }> = async (fastify, { app, metrics }) => {
  const { sessions, store, config } = app;

  fastify.get('/runs/:id', { schema: { tags: ['runs'], params: RunParams, response: { 200: Type.Ref(Run), ...errorResponses } } }, async (request) =>
    sessions.getRun(request.tenant, request.params.id),
  );

  fastify.post(
    '/runs/:id/interrupt',
    {
      schema: {
        tags: ['runs'],
        description: 'A queued run ends interrupted at once; an active run is stopped and ends with error user_cancelled. 409 if the run already ended.',
        params: RunParams,
        response: { 202: Type.Ref(Run), ...errorResponses },
      },
    },
    async (request, reply) => reply.status(202).send(await sessions.interruptRun(request.tenant, request.params.id)),
  );

  fastify.get(
    '/runs/:id/events',
    {
      schema: {
        tags: ['events'],
        description:
          'The run\'s events after `after` (a session seq). JSON by default; with `Accept: text/event-stream` an SSE stream that replays, goes live and ends after the terminal event. SSE resumes from `Last-Event-ID`.',
        params: RunParams,
        querystring: EventsQuery,
        response: { 200: EventPage, ...errorResponses },
      },
    },
    async (request, reply) => {
      const run = await sessions.getRun(request.tenant, request.params.id);
      // The default page never exceeds the configured maximum (ASM_EVENT_PAGE_MAX may be below it).
      const limit = request.query.limit ?? Math.min(DEFAULT_PAGE, config.limits.eventPageMax);
      if (limit > config.limits.eventPageMax) throw badField('query.limit', `must be at most ${config.limits.eventPageMax} (ASM_EVENT_PAGE_MAX)`);
      if (request.headers.accept?.includes('text/event-stream')) {
        const after = sseCursor(request.headers['last-event-id'], request.query.after);
        // Held before the stream starts (the one over the tenant's `connections` quota gets a 429), let go when it ends.
        const release = await sessions.holdConnection(request.tenant);
        const uncount = metrics?.streamOpened('sse');
        return streamSse(reply, app, run.session_id, run.id, runEventsAfter(run, after), () => {
          release();
          uncount?.();
        });
      }
      const after = request.query.after ?? 0;
      // One round trip for both: a run's state is stored before its terminal event is appended, so
      // read together or one after the other, a terminal run_state may come with a page that ends before it.
      // A run read terminal above stays so: its state is not read again.
      const [events, current] = await Promise.all([
        store.events.readJson(run.session_id, { after: runEventsAfter(run, after), runId: run.id, limit }),
        isTerminalRunState(run.state) ? run : store.runs.get(run.id),
      ]);
      const page = eventPageJson(events.json, events.lastSeq ?? after, (current ?? run).state);
      return reply.type('application/json; charset=utf-8').send(page as unknown as Static<typeof EventPage>); // the page, written already
    },
  );
};

/**
 * The EventPage answer as JSON, the events as the store has them (EventLog.readJson): Fastify sends a
 * string or a Buffer as it is. Serialising the page from its schema spent most of the route's time
 * parsing and writing each event again (bench/RESULTS.md, issue 14, eleventh pass).
 */
function eventPageJson(events: EventsJson['json'], nextAfter: number, runState: RunState): string | Buffer {
  const end = `],"next_after":${nextAfter},"run_state":${JSON.stringify(runState)}}`;
  return typeof events === 'string' ? `{"events":[${events}${end}` : Buffer.concat([PAGE_START, ...events, Buffer.from(end)]);
}

const PAGE_START = Buffer.from('{"events":[');

function sseCursor(lastEventId: string | string[] | undefined, after: number | undefined): number {
  if (lastEventId === undefined) return after ?? 0;
  const value = Number(Array.isArray(lastEventId) ? lastEventId[0] : lastEventId);
  if (!Number.isInteger(value) || value < 0) throw badField('header.last-event-id', 'must be a non-negative integer seq');
  return value;
}

async function streamSse(reply: FastifyReply, app: AsmApp, sessionId: string, runId: string, after: number, release: () => void): Promise<void> {
  const raw = reply.raw;
  reply.hijack();
  raw.writeHead(200, { 'x-request-id': reply.request.id, 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  raw.write(': stream open\n\n');

  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    follower.stop();
    raw.end();
    release();
  };
  // A write corks the socket until the next tick, which comes only once every pending microtask has
  // run (the rest of the event's recording): an event reached SSE clients after the WebSocket's,
  // which writes at once. So the first write of a tick goes at once, corked around it to take its
  // chunk framing along; later ones in the same tick (a burst: many lines in one read of the CLI's
  // output) are left to that cork, and leave together, not in a write each (bench/RESULTS.md,
  // sixteenth pass).
  let tickWritten = false;
  const write = (message: Buffer): boolean => {
    if (tickWritten) return raw.write(message);
    tickWritten = true;
    process.nextTick(() => (tickWritten = false));
    raw.cork();
    const flushed = raw.write(message);
    raw.uncork();
    return flushed;
  };
  const send = async (event: AsmEvent) => {
    if (ended) return;
    const flushed = write(sseEventMessage(event));
    if (TERMINAL_KINDS.has(event.kind)) return end();
    // Both replay and live wait for a slow reader here: HTTP has no close code to resume from.
    if (!flushed) {
      waitingForReader = true;
      // Whichever comes first takes the other listener off too: a stream waits many times.
      await new Promise<void>((resolve) => {
        const done = () => {
          raw.off('drain', done).off('close', done);
          resolve();
        };
        raw.on('drain', done).on('close', done);
      });
      waitingForReader = false;
    }
  };
  // A reader that took no byte of what waits for it in a whole heartbeat is dead (it stopped reading,
  // or its connection is half-open): its stream ends, returning its `connections` holding, as the
  // WebSocket's missed pong does; a live client resumes with Last-Event-ID.
  let waitingForReader = false;
  let pendingAtLastBeat = -1;
  const heartbeat = setInterval(() => {
    const pending = raw.writableLength;
    if (waitingForReader && pending >= pendingAtLastBeat && pendingAtLastBeat >= 0) return raw.destroy();
    pendingAtLastBeat = waitingForReader ? pending : -1;
    raw.write(': ping\n\n');
  }, app.config.limits.wsHeartbeatMs);
  // Ending the stream on a failure lets the client reconnect with Last-Event-ID.
  const follower = followEvents(app.store.events, { sessionId, runId, after, pageSize: app.config.limits.eventPageMax }, send, end);
  raw.on('close', end);
  await follower.live;
  // A run that ended before `after` has nothing more to send.
  const run = await app.store.runs.get(runId);
  if (run && isTerminalRunState(run.state) && !ended) {
    const lastOfRun = await app.store.events.read(sessionId, { after, runId, limit: 1 });
    if (lastOfRun.length === 0) end();
  }
}
