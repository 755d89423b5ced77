import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { fromRedisError, isPermanentRefusal } from '../errors/from-redis.js';

/**
 * How distributed mode talks to Redis on a request's path (the store, the cluster of instances):
 * connections that fail fast instead of queueing while Redis is away, and one translation of Redis
 * failures into AsmError `not_ready` (HTTP 503), remembering why the connection last failed.
 */

export interface RedisLinkOptions {
  /** redis:// or rediss:// URL; ACL credentials as user:password@. */
  url: string;
  /** How long a command may take before the call fails with not_ready (default 2000 ms). */
  commandTimeoutMs?: number;
  /** Longest pause between reconnection attempts (default 1000 ms). */
  maxReconnectDelayMs?: number;
  /** PEM file of the CA that signed the server's certificate (TLS). */
  tlsCaFile?: string;
  /** Further ioredis options; they override the link's own. */
  redisOptions?: RedisOptions;
}

/** ioredis's rejection of a command that `commandTimeout` gave up on. */
const COMMAND_TIMED_OUT = 'Command timed out';

export class RedisLink {
  private readonly connections: Redis[] = [];
  private readonly stallChecks: NodeJS.Timeout[] = [];
  private lastConnectionError: string | undefined;

  constructor(
    private readonly options: RedisLinkOptions,
    private readonly logger?: Pick<Logger, 'info' | 'warn'>,
  ) {}

  /** Options for a connection that fails fast; shared with connections made elsewhere (e.g. BullMQ's). */
  get connectionOptions(): RedisOptions {
    return {
      // Fail fast while disconnected instead of queueing, and never replay a command whose reply was
      // lost (an append would be stored twice).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: this.options.commandTimeoutMs ?? 2_000,
      retryStrategy: (attempt: number) => Math.min(attempt * 100, this.options.maxReconnectDelayMs ?? 1_000),
      ...(this.options.tlsCaFile ? { tls: { ca: readFileSync(this.options.tlsCaFile) } } : {}),
      ...this.options.redisOptions,
    };
  }

  connect(extra: RedisOptions = {}): Redis {
    const connection = new Redis(this.options.url, { ...this.connectionOptions, ...extra });
    connection.on('error', (err: Error) => {
      if (this.lastConnectionError === undefined) this.logger?.warn({ err }, 'Redis connection failed; reconnecting');
      this.lastConnectionError = err.message;
    });
    connection.on('ready', () => {
      if (this.lastConnectionError !== undefined) this.logger?.info('Redis connection restored');
      this.lastConnectionError = undefined;
    });
    this.connections.push(connection);
    this.stallChecks.push(this.checkForStalls(connection));
    return connection;
  }

  /**
   * A connection for the small, independent commands of concurrent requests (the store's, the
   * cluster's): the commands issued in one event-loop turn go out in one write, one system call
   * instead of one per command (a submit in Redis mode sends 16 of its own; bench/RESULTS.md,
   * seventh pass), and each turn's write goes out while earlier ones are still unanswered. ioredis's
   * own batching (`enableAutoPipelining`) sends a batch only once the one ahead of it is answered, and
   * hands a batch's replies back together: every command waited for an unrelated batch's round trip,
   * and a large reply (an events page) held up the small ones sent with it. Without it a Redis-mode
   * run cost the server 11–20% less CPU (`bench -- runs redis`, alternated; bench/RESULTS.md,
   * forty-first pass).
   */
  connectBatched(extra: RedisOptions = {}): Redis {
    const connection = this.connect(extra);
    // Each connect brings a new socket; ioredis's own first commands (AUTH, INFO) go before this.
    connection.on('connect', () => writeOncePerTurn(connection.stream));
    return connection;
  }

  /**
   * A connection whose PING goes unanswered for `commandTimeoutMs` is stalled, and is reconnected.
   * After a network partition heals, Redis resends what it wrote into the cut only on its TCP
   * retransmission backoff (an API process heard nothing on a connection for over 13 s after a 35 s
   * cut: bench/RESULTS.md), and a subscriber sends no command of its own that would time out: its
   * clients would get no event meanwhile. Once reconnected, a subscriber subscribes again and reads
   * what it missed from the stream (redis-events.ts). Only a timeout counts: a PING an ACL refuses
   * is no stall.
   */
  private checkForStalls(connection: Redis): NodeJS.Timeout {
    const timer = setInterval(() => {
      if (connection.status !== 'ready') return;
      connection.ping().catch((err: Error) => {
        if (err.message === COMMAND_TIMED_OUT && connection.status === 'ready') connection.disconnect(true);
      });
    }, this.options.commandTimeoutMs ?? 2_000);
    timer.unref();
    return timer;
  }

  /** Resolve once every connection made so far is ready; reject with not_ready after timeoutMs, or at once at a refused login or an untrusted certificate. */
  async ready(timeoutMs: number): Promise<void> {
    try {
      await Promise.all(this.connections.map((connection) => firstReady(connection, timeoutMs)));
    } catch (err) {
      throw this.toAsmError(err);
    }
  }

  /**
   * Fail at start-up, with a message that names the ACL, when the user may not touch these keys
   * (rather than on the first request, or with BullMQ's raw reply from deep inside a worker).
   */
  async checkAccess(keys: string[]): Promise<void> {
    const [connection] = this.connections;
    try {
      for (const key of keys) await connection.exists(key);
    } catch (err) {
      throw this.toAsmError(err);
    }
  }

  /** A failure of a call on this link as errors/from-redis.ts translates it, naming why the connection last failed. */
  toAsmError(err: unknown): unknown {
    return fromRedisError(err, this.lastConnectionError);
  }

  async close(): Promise<void> {
    for (const timer of this.stallChecks) clearInterval(timer);
    await Promise.all(
      this.connections.map((connection) => {
        if (connection.status === 'ready') return connection.quit().then(() => undefined, () => connection.disconnect());
        // Ended mid-handshake, a TLS socket errors again (the server's alert) after ioredis has
        // stopped listening for its errors, which would throw as uncaught: found when a start that
        // an untrusted certificate ended closed the other connections still shaking hands.
        (connection.stream as Redis['stream'] | undefined)?.on('error', () => {});
        return connection.disconnect();
      }),
    );
  }
}

/**
 * Every promise `part` returns rejects with an AsmError when Redis cannot serve it, so a route
 * answers 503 rather than 500. Other Redis replies are bugs and pass through.
 */
export function guarded<T extends object>(part: T, toAsmError: (err: unknown) => unknown): T {
  return new Proxy(part, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const result = value.apply(target, args);
        return result instanceof Promise ? result.catch((err: unknown) => Promise.reject(toAsmError(err))) : result;
      };
    },
  });
}

/** Holds what is written to `socket` in this event-loop turn (cork) and sends it all as the turn ends (uncork: one writev). */
function writeOncePerTurn(socket: Redis['stream']): void {
  const write = socket.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function (this: typeof socket, ...args: Parameters<typeof write>) {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    return write.apply(this, args);
  } as typeof write;
}

/** Wait for a connection's first ready; a refused login or an untrusted certificate ends the wait at once, since retrying cannot help. */
function firstReady(connection: Redis, timeoutMs: number): Promise<void> {
  if (connection.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      connection.off('ready', onReady);
      connection.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => done();
    const onError = (err: Error) => {
      if (isPermanentRefusal(err)) done(err);
    };
    const timer = setTimeout(() => done(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
    connection.on('ready', onReady);
    connection.on('error', onError);
  });
}
