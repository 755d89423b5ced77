import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
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
    case fastifyError.code === 'FST_ERR_BAD_URL' || fastifyError.code === 'FST_ERR_MAX_PARAM_LENGTH':
      return badField('url', fastifyError.message ?? 'bad url');
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

/** Our own errors answer with their kind's status; Fastify's 4xx (415, 414…) keep theirs. */
function statusOf(err: unknown, asmError: AsmError): number {
  const status = err instanceof AsmError ? undefined : (err as Partial<FastifyError>).statusCode;
  return status !== undefined && status >= 400 && status < 500 ? status : asmError.httpStatus;
}

function sendError(err: unknown, request: FastifyRequest, reply: FastifyReply) {
  const asmError = toAsmError(err);
  if (asmError.kind === 'unknown') request.log.error({ err }, 'unhandled error');
  else request.log.info({ kind: asmError.kind, message: asmError.message }, 'request refused');
  return reply.status(statusOf(err, asmError)).send({ error: asmError.toBody() });
}

/** Errors Fastify raises before routing (a malformed or over-long URL), in the same body as every other error. */
export const frameworkErrors = (err: FastifyError, request: FastifyRequest, reply: FastifyReply) => void sendError(err, request, reply);

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler(sendError);
  app.setNotFoundHandler((request, reply) => {
    const error = new AsmError('not_found', `no route ${request.method} ${request.url.split('?')[0]}`);
    return reply.status(404).send({ error: error.toBody() });
  });
}
