import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AsmApp } from '../app.js';
import { AsmError } from '../errors/kinds.js';
import { isPublicPath } from './auth.js';

/**
 * Requests per tenant and window (the tenant's `rate`; ASM_RATE_LIMIT for a tenant that names none,
 * and `0` turns the limit off), counted after authentication so the key is the tenant, not an address. In distributed mode every process counts in Redis, so the limit holds for
 * the deployment. Beyond it: 429 `rate_limit` with Retry-After (seconds) and the error body. Health
 * and the API description are not counted. A counter Redis cannot serve lets the request through:
 * the request's own store calls answer 503 then anyway.
 */
export async function registerRateLimit(fastify: FastifyInstance, app: AsmApp): Promise<void> {
  if (!app.config.rateLimit) return;
  const rateOf = (request: FastifyRequest) => app.tenants.get(request.tenant).rate;
  await fastify.register(rateLimit, {
    global: true,
    hook: 'preHandler',
    max: (request) => rateOf(request).max,
    timeWindow: (request) => rateOf(request).windowMs,
    keyGenerator: (request) => `tenant:${request.tenant}`,
    allowList: (request) => isPublicPath(request.url),
    ...(app.redis && { redis: app.redis, nameSpace: `${app.config.redis!.prefix}:rate:`, skipOnError: true }),
    addHeadersOnExceeding: { 'x-ratelimit-limit': true, 'x-ratelimit-remaining': true, 'x-ratelimit-reset': true },
    addHeaders: { 'x-ratelimit-limit': true, 'x-ratelimit-remaining': true, 'x-ratelimit-reset': true, 'retry-after': true },
    errorResponseBuilder: (request, context) => {
      const { windowMs } = rateOf(request);
      return new AsmError('rate_limit', `too many requests: at most ${context.max} per ${windowMs} ms for this tenant (its rate, or ASM_RATE_LIMIT); retry after ${context.after}`, {
        domain: 'runtime',
        details: { limit: context.max, window_ms: windowMs, retry_after_ms: context.ttl },
      });
    },
  });
}
