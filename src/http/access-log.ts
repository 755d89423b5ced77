import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';

/**
 * The access log: one line per request at info, written when it is answered and naming the request
 * (method, URL, peer), its status and its time. Fastify writes two (one on arrival); at this service's
 * request rates each line costs a cheap request a noticeable share of its time, so the arrival line is
 * kept at debug, for finding a request that never ends. Errors and Fastify's other lines are unchanged.
 *
 * `ASM_ACCESS_LOG=off` (`enabled` false) writes neither, for a deployment whose proxy logs each request
 * already: even as one line, its formatting and write cost a cheap `GET` about a sixth of its
 * throughput (bench/RESULTS.md, issue 14, seventeenth pass). A request that errored is logged either way,
 * which Fastify's own `disableRequestLogging` would drop too.
 */
export class AccessLog extends LogController {
  constructor(private readonly enabled: boolean) {
    super();
  }

  override incomingRequest(request: FastifyRequest): void {
    if (this.enabled && (request.log as Logger).isLevelEnabled('debug')) request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
    else if (this.enabled) reply.log.info({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}
