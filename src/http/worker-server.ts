import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { AsmApp } from '../app.js';
import { adminOnly, registerAuth } from './auth.js';
import { registerErrorHandling } from './errors.js';
import { AsmMetrics } from './metrics.js';

/**
 * What a worker node serves over HTTP (`asm worker --metrics-port`): its own Prometheus metrics for
 * admins, and liveness. A worker takes its runs from Redis, so it has no API of its own.
 */
export async function buildWorkerServer(app: AsmApp): Promise<FastifyInstance> {
  const fastify = Fastify({ loggerInstance: app.logger as FastifyBaseLogger, forceCloseConnections: true });
  registerErrorHandling(fastify);
  registerAuth(fastify, app.tenants);
  const metrics = new AsmMetrics(app);
  metrics.observeRequestsOf(fastify);
  fastify.get('/healthz', async () => ({ status: 'ok' }));
  fastify.get('/metrics', { onRequest: adminOnly }, async (_request, reply) => {
    reply.type(metrics.contentType);
    return metrics.render();
  });
  return fastify;
}
