import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';

/**
 * The access log: one line per request at info, written when it is answered and naming the request
 * (method, URL, peer), its status and its time. Fastify writes two (one on arrival); at this service's
 * request rates each line costs about a tenth of a cheap request's server time, so the arrival line is
 * kept at debug, for finding a request that never ends. Errors and Fastify's other lines are unchanged.
 */
export class AccessLog extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    if ((request.log as Logger).isLevelEnabled('debug')) request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
    else reply.log.info({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}
