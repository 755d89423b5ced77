import type { FastifyError, FastifyInstance } from 'fastify';
import { AsmError, badField } from '../errors.js';

/**
 * The one translation from anything thrown in a route to the error body and status of errors.ts.
 * Fastify's own 4xx (bad JSON, body too large, wrong content type) keep their status with our body;
 * anything else is a 500 whose details stay in the log, never in the response.
 */
export function toAsmError(err: unknown): AsmError {
  if (err instanceof AsmError) return err;
  const fastifyError = err as Partial<FastifyError>;
  const status = fastifyError.statusCode ?? 500;
  switch (true) {
    case status === 413:
      return new AsmError('payload_too_large', `body: ${fastifyError.message}`, { details: { field: 'body' } });
    case status === 415:
      return badField('body', `unsupported content type; send application/json (${fastifyError.message})`);
    case status === 404:
      return new AsmError('not_found', fastifyError.message ?? 'not found');
    case status >= 400 && status < 500:
      return badField('body', fastifyError.message ?? 'bad request');
    default:
      return new AsmError('unknown', 'internal error');
  }
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const asmError = toAsmError(err);
    if (asmError.kind === 'unknown') request.log.error({ err }, 'unhandled error');
    else request.log.info({ kind: asmError.kind, message: asmError.message }, 'request refused');
    return reply.status(asmError.httpStatus).send({ error: asmError.toBody() });
  });
  app.setNotFoundHandler((request, reply) => {
    const error = new AsmError('not_found', `no route ${request.method} ${request.url.split('?')[0]}`);
    return reply.status(404).send({ error: error.toBody() });
  });
}
