import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { AsmApp } from '../../app.js';
import { AsmError } from '../../errors/kinds.js';
import type { LaneMetrics } from '../../lanes/types.js';
import { DeadLetterList, DlqParams, PageQuery, QueueList, QueueParams } from '../../schemas/api.js';
import { EVERY_TENANT } from '../../sessions/dead-letters.js';
import { pageOf } from '../../store/paging.js';
import { adminOnly } from '../auth.js';
import { errorResponses, pageRequest } from './sessions.js';

export function toQueueInfo(m: LaneMetrics, lane: { minConcurrency: number; maxConcurrency: number }) {
  return {
    name: m.id,
    priority: m.priority,
    min_concurrency: lane.minConcurrency,
    max_concurrency: lane.maxConcurrency,
    pending: m.pending,
    active: m.active,
    delayed: m.delayed,
    completed: m.completed,
    failed: m.failed,
    timed_out: m.timeout,
    retried: m.retried,
    dead_lettered: m.deadLettered,
    cancelled: m.cancelled,
    pressure: m.pressured,
    paused: m.paused,
    latency_ms: m.latencyMs,
    wait_ms: m.waitMs,
  };
}

export const queueRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp }> = async (fastify, { app }) => {
  const { engine, sessions } = app;
  const laneConfig = (name: string) => {
    const lane = engine.lanes().find((l) => l.id === name);
    if (!lane) throw new AsmError('not_found', `queue lane ${name} not found`);
    return lane;
  };

  fastify.get('/queues', { schema: { tags: ['queues'], querystring: PageQuery, response: { 200: QueueList, ...errorResponses } } }, async (request) => {
    const page = pageOf(await engine.metrics(), pageRequest(request.query));
    return { queues: page.items.map((m) => toQueueInfo(m, laneConfig(m.id))), next_cursor: page.next };
  });

  // Lanes are shared by every tenant: pausing one is an admin's decision.
  for (const action of ['pause', 'resume'] as const) {
    fastify.post(
      `/queues/:lane/${action}`,
      { onRequest: adminOnly, schema: { tags: ['queues'], description: 'Admins only (403 for a tenant).', params: QueueParams, response: { 200: QueueList, ...errorResponses } } },
      async (request) => {
        laneConfig(request.params.lane);
        await engine[action](request.params.lane);
        const metrics = (await engine.metrics()).filter((m) => m.id === request.params.lane);
        return { queues: metrics.map((m) => toQueueInfo(m, laneConfig(m.id))), next_cursor: null };
      },
    );
  }

  // A tenant sees, retries and deletes its own runs' letters; an admin every letter.
  const viewer = (request: FastifyRequest) => (request.role === 'admin' ? EVERY_TENANT : request.tenant);

  fastify.get(
    '/dlq',
    {
      schema: {
        tags: ['queues'],
        description: "Dead-lettered runs of the caller's sessions (an admin's: every tenant's)",
        querystring: PageQuery,
        response: { 200: DeadLetterList, ...errorResponses },
      },
    },
    async (request) => {
      const page = pageOf(await sessions.deadLetters(viewer(request)), pageRequest(request.query));
      return {
        dead_letters: page.items.map((l) => ({
          id: l.commandId,
          type: l.commandType,
          queue: l.laneId,
          payload: l.payload,
          error: l.error,
          attempts: l.attempts,
          failed_at: new Date(l.failedAt).toISOString(),
        })),
        next_cursor: page.next,
      };
    },
  );

  fastify.post(
    '/dlq/:id/retry',
    {
      schema: {
        tags: ['queues'],
        description: 'Retry a dead letter. A failed run is submitted again as a new run of its session (run_id), through normal admission.',
        params: DlqParams,
        response: { 202: Type.Object({ command_id: Type.String(), run_id: Type.Union([Type.String(), Type.Null()]) }), ...errorResponses },
      },
    },
    async (request, reply) => reply.status(202).send(await sessions.retryDeadLetter(viewer(request), request.params.id)),
  );

  fastify.delete('/dlq/:id', { schema: { tags: ['queues'], params: DlqParams, response: { 204: Type.Null(), ...errorResponses } } }, async (request, reply) => {
    await sessions.deleteDeadLetter(viewer(request), request.params.id);
    return reply.status(204).send(null);
  });
};
