import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AsmError } from '../errors/kinds.js';

declare module 'fastify' {
  interface FastifyRequest {
    tenant: string;
  }
}

/** Routes that answer without a key: health, and the API's own description. */
const PUBLIC_PREFIXES = ['/healthz', '/readyz', '/docs', '/openapi.json'];

export const DEFAULT_TENANT = 'default';

/**
 * Bearer API keys map to tenants (ASM_API_KEYS). With no keys configured every caller is the one
 * default tenant, which is why the server then refuses to bind anything but loopback.
 */
export function registerAuth(app: FastifyInstance, apiKeys: Map<string, string>): void {
  app.decorateRequest('tenant', DEFAULT_TENANT);
  if (apiKeys.size === 0) return;
  app.addHook('onRequest', async (request) => {
    if (isPublicPath(request.url)) return;
    request.tenant = tenantFor(request, apiKeys);
  });
}

/** Health and the API's own description: they answer without a key, and are not rate limited. */
export function isPublicPath(url: string): boolean {
  const path = url.split('?')[0];
  return PUBLIC_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`));
}

function tenantFor(request: FastifyRequest, apiKeys: Map<string, string>): string {
  const header = request.headers.authorization;
  // Browsers cannot set headers on a WebSocket, so the stream also takes ?token=.
  const token = header?.startsWith('Bearer ')
    ? header.slice('Bearer '.length).trim()
    : ((request.query as Record<string, unknown> | undefined)?.token as string | undefined);
  if (!token) throw new AsmError('unauthorized', 'missing API key: send Authorization: Bearer <key>');
  const tenant = apiKeys.get(token);
  if (!tenant) throw new AsmError('unauthorized', 'unknown API key');
  return tenant;
}
