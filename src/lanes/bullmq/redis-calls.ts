import { Redis, type RedisOptions } from 'ioredis';
import { errorMessage, laneErrors, noop } from '../errors.js';

/**
 * ioredis errors that mean the command never reached Redis (or its answer was lost); the connection
 * status can still read `ready` when the socket has just gone.
 */
const CONNECTION_LOST = /Stream isn't writeable|Connection is closed|ECONNREFUSED|ECONNRESET|EPIPE|max retries per request/i;

/** A connection to `connection` with the engine's `shared` options and this connection's `own` on top. */
export function connect(connection: string | RedisOptions, shared: RedisOptions | undefined, own: RedisOptions): Redis {
  const extra = { ...shared, ...own };
  const client = typeof connection === 'string' ? new Redis(connection, extra) : new Redis({ ...connection, ...extra });
  client.on('error', noop);
  return client;
}

/**
 * How an engine waits on Redis: the writes in flight, which close() lets finish, and the timeout
 * guard that turns a Redis that does not answer (or a lost connection) into `unavailable`.
 */
export class RedisCalls {
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(
    /** The connection whose state tells a lost connection from a failed command. */
    private readonly producer: Redis,
    private readonly timeoutMs: number,
  ) {}

  /** Counts `promise` as a write in flight until it settles. */
  track<T>(promise: Promise<T>): Promise<T> {
    this.inflight.add(promise);
    const done = () => this.inflight.delete(promise);
    promise.then(done, done);
    return promise;
  }

  /**
   * Rejects `unavailable` when Redis does not answer within the timeout (calling `onExpire`), or
   * fails while the connection is down.
   */
  bounded<T>(operation: Promise<T>, onExpire?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let expired = false;
      const timer = setTimeout(() => {
        expired = true;
        onExpire?.();
        reject(laneErrors.unavailable(this.timeoutMs));
      }, this.timeoutMs);
      operation.then(
        (value) => {
          clearTimeout(timer);
          if (!expired) resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          if (expired) return;
          const lost = this.producer.status !== 'ready' || CONNECTION_LOST.test(errorMessage(error));
          reject(lost ? laneErrors.unavailable(this.timeoutMs) : error);
        },
      );
    });
  }

  /** Waits for the writes now in flight, but no longer than the timeout. */
  async settleInflight(): Promise<void> {
    await this.bounded(Promise.allSettled([...this.inflight])).catch(noop);
  }
}
