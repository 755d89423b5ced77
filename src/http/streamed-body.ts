import type { FastifyInstance, FastifyRequest } from 'fastify';
import { PassThrough, Readable } from 'node:stream';

/** Bodies of the plugin's routes are raw bytes whatever their content type, streamed to the handler (that plugin only). */
export function rawBodies(fastify: FastifyInstance): void {
  fastify.removeAllContentTypeParsers();
  fastify.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
}

/**
 * Runs `work` on the request's body through a stream of its own: when the work fails midway (413, a
 * refused entry) only that stream is destroyed, and the rest of the body is read and dropped, so the
 * client gets the answer rather than a reset connection.
 */
export async function streamed<T>(request: FastifyRequest, work: (body: Readable) => Promise<T>): Promise<T> {
  const raw = request.body instanceof Readable ? request.body : Readable.from([]);
  const body = raw.pipe(new PassThrough());
  try {
    return await work(body);
  } catch (err) {
    raw.unpipe(body);
    raw.resume();
    throw err;
  }
}
