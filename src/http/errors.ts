import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AsmError } from '../errors/kinds.js';
import { fromFastifyError } from '../errors/from-fastify.js';

/** Our own errors answer with their kind's status; Fastify's 4xx (415, 414…) keep theirs. */
function statusOf(err: unknown, asmError: AsmError): number {
  const status = err instanceof AsmError ? undefined : (err as Partial<FastifyError>).statusCode;
  return status !== undefined && status >= 400 && status < 500 ? status : asmError.httpStatus;
}

function sendError(err: unknown, request: FastifyRequest, reply: FastifyReply) {
  const asmError = fromFastifyError(err);
  if (asmError.kind === 'unknown') request.log.error({ err }, 'unhandled error');
  else request.log.info({ kind: asmError.kind, message: asmError.message }, 'request refused');
  return reply.status(statusOf(err, asmError)).send({ error: asmError.toBody() });
}

/**
 * Errors Fastify raises before routing (a malformed or over-long URL), in the same body as every other
 * error, and with the request's id, which the server's first onRequest hook sets on every other answer.
 */
export const frameworkErrors = (err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
  reply.header('x-request-id', request.id);
  void sendError(err, request, reply);
};

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler(sendError);
  app.setNotFoundHandler((request, reply) => {
    const error = new AsmError('not_found', `no route ${request.method} ${request.url.split('?')[0]}`);
    return reply.status(404).send({ error: error.toBody() });
  });
}
