import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AsmError } from '../errors/kinds.js';

/**
 * What a web page in the user's browser may not do with this server. A page cannot read an HTTP
 * answer from another origin, but it can open a WebSocket to any server (the browser sends the page's
 * Origin and lets the server decide), and through DNS rebinding its own host name can come to point
 * at 127.0.0.1. So:
 * - a WebSocket upgrade that carries an Origin header is refused unless the operator listed that
 *   origin (ASM_ALLOWED_ORIGINS); clients other than browsers send none and are not affected;
 * - a server without API keys (only ever bound to loopback) answers only requests addressed to a
 *   loopback name, so a rebound name gets nothing, on any route.
 * Registered after the WebSocket plugin, whose hook marks upgrade requests (`request.ws`), so a refused
 * upgrade gets its 403 and then its socket closed.
 */
export function registerBrowserSafety(app: FastifyInstance, options: { allowedOrigins: string[]; keyless: boolean }): void {
  const allowed = new Set(options.allowedOrigins);
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      if (options.keyless) checkLoopbackHost(request);
      const origin = request.headers.origin;
      if (request.ws && origin !== undefined && !allowed.has(origin)) {
        throw new AsmError('forbidden', `Origin ${origin} may not open the WebSocket; the operator lists the origins that may in ASM_ALLOWED_ORIGINS`, {
          details: { field: 'headers.origin', origin },
        });
      }
      done();
    } catch (err) {
      done(err as Error);
    }
  });
}

/** Host names a keyless server answers to, with any port. */
const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]']);
/** A Host header: a name or a bracketed IPv6 address, then an optional port. */
const HOST_HEADER = /^(\[[^\]]*\]|[^:]*)(?::\d*)?$/;

function checkLoopbackHost(request: FastifyRequest): void {
  const host = request.headers.host ?? '';
  const name = HOST_HEADER.exec(host)?.[1].toLowerCase();
  if (name === undefined || !LOOPBACK_NAMES.has(name)) {
    throw new AsmError(
      'forbidden',
      `Host ${JSON.stringify(host)} is not localhost, 127.0.0.1 or [::1]: a server without API keys answers only its loopback names (another name may be a page's DNS rebinding)`,
      { details: { field: 'headers.host' } },
    );
  }
}
