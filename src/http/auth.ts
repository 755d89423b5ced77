import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AsmError } from '../errors/kinds.js';
import { DEFAULT_TENANT, type TenantDirectory, type TenantRole } from '../tenants.js';

declare module 'fastify' {
  interface FastifyRequest {
    tenant: string;
    role: TenantRole;
  }
}

/** Routes that answer without a key: health, and the API's own description. */
const PUBLIC_PREFIXES = ['/healthz', '/readyz', '/docs', '/openapi.json'];

/**
 * The event streams, the only routes that take the key as `?token=`: browsers cannot set headers on
 * a WebSocket or an EventSource. Anywhere else a key in the URL would only end up in logs and
 * browser histories.
 */
const TOKEN_ROUTES = new Set(['/v1/events', '/v1/runs/:id/events']);

/**
 * Bearer keys identify tenants (src/tenants.ts): the presented key is hashed and its digest looked
 * up. With no key configured every caller is the one default tenant, an admin, which is why the
 * server then refuses to bind anything but loopback.
 */
export function registerAuth(app: FastifyInstance, tenants: TenantDirectory): void {
  app.decorateRequest('tenant', DEFAULT_TENANT);
  app.decorateRequest('role', tenants.keyless ? 'admin' : 'tenant');
  if (tenants.keyless) return;
  app.addHook('onRequest', (request, _reply, done) => {
    if (isPublicPath(request.url)) return done();
    try {
      const policy = tenants.authenticate(presentedKey(request));
      if (!policy) throw new AsmError('unauthorized', 'unknown API key');
      request.tenant = policy.id;
      request.role = policy.role;
      done();
    } catch (err) {
      done(err as Error);
    }
  });
}

/** Health and the API's own description: they answer without a key, and are not rate limited. */
export function isPublicPath(url: string): boolean {
  const path = url.split('?')[0];
  return PUBLIC_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`));
}

function presentedKey(request: FastifyRequest): string {
  const header = request.headers.authorization;
  const token = (request.query as Record<string, unknown> | undefined)?.token;
  if (token !== undefined && !TOKEN_ROUTES.has(request.routeOptions.url ?? '')) {
    throw new AsmError(
      'unauthorized',
      'the token query parameter is accepted only on the event streams (GET /v1/events, GET /v1/runs/{id}/events): send Authorization: Bearer <key>',
    );
  }
  if (header?.startsWith('Bearer ')) return header.slice('Bearer '.length).trim();
  if (typeof token === 'string' && token !== '') return token;
  throw new AsmError('unauthorized', 'missing API key: send Authorization: Bearer <key>');
}

/** Route hook of the global operations (lanes, every tenant's DLQ, nodes, metrics): admins only. */
export async function adminOnly(request: FastifyRequest): Promise<void> {
  if (request.role !== 'admin') {
    throw new AsmError('forbidden', `${request.method} ${request.routeOptions.url ?? request.url} is for admins; tenant ${request.tenant} has the role tenant`);
  }
}
