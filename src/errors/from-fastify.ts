import type { FastifyError } from 'fastify';
import { AsmError, badField } from './kinds.js';

/**
 * The one translation from anything thrown in a route to the error body and status of errors.ts.
 * Fastify's own 4xx (bad JSON, body too large, wrong content type) keep their status with our body;
 * anything else is a 500 whose details stay in the log, never in the response.
 */
export function fromFastifyError(err: unknown): AsmError {
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
