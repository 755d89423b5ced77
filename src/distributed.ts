import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { Redis, type RedisOptions } from 'ioredis';
import type { Infrastructure } from './app.js';
import type { AsmConfig, RedisSettings } from './config.js';
import { BullMQLaneEngine } from './lanes/bullmq-engine.js';
import type { EngineOptions } from './lanes/types.js';
import type { SelfReport } from './nodes/cluster.js';
import { RedisCluster } from './nodes/redis.js';
import { createRedisStore } from './store/redis.js';

/**
 * Distributed mode's parts, all on one Redis: the Redis store, the BullMQ lane engine and the
 * cluster of API processes. Every connection is made from the same options, so a `rediss://` URL,
 * an ACL user or a private CA apply everywhere.
 */
export async function connectDistributed(
  config: AsmConfig,
  redis: RedisSettings,
  engineOptions: EngineOptions,
  self: string,
  report: SelfReport,
  logger: Logger,
): Promise<Infrastructure> {
  const base = connectionOptions(redis);
  const connections: Redis[] = [];
  const connect = (extra: RedisOptions = {}) => {
    const connection = new Redis(redis.url, { ...base, ...extra });
    connection.on('error', (err) => logger.debug({ err: err.message }, 'redis connection error'));
    connections.push(connection);
    return connection;
  };
  const store = createRedisStore({
    url: redis.url,
    redisOptions: base,
    prefix: redis.prefix,
    eventsPerSession: config.limits.eventsPerSession,
    commandTimeoutMs: redis.commandTimeoutMs,
  });
  const engine = new BullMQLaneEngine({
    ...engineOptions,
    connection: redis.url,
    prefix: `{${redis.prefix}}`,
    lockDurationMs: config.cluster.jobLockMs,
    stalledIntervalMs: config.cluster.stalledIntervalMs,
    commandTimeoutMs: redis.commandTimeoutMs,
  });
  const cluster = new RedisCluster({
    self,
    redis: connect({ enableOfflineQueue: false, commandTimeout: redis.commandTimeoutMs }),
    subscriber: connect(),
    prefix: redis.prefix,
    report,
    heartbeatMs: config.cluster.heartbeatMs,
    ttlMs: config.cluster.nodeTtlMs,
    lockLeaseMs: 30_000,
    lockWaitMs: redis.commandTimeoutMs * 5,
  });
  logger.info({ redis: redactUrl(redis.url), prefix: redis.prefix, instance: self }, 'distributed mode: state in Redis, lanes on BullMQ');
  return {
    store,
    engine,
    cluster,
    close: async () => {
      await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
    },
  };
}

/** Options every connection shares: TLS with a private CA, and retrying forever with a capped backoff. */
export function connectionOptions(redis: RedisSettings): RedisOptions {
  const options: RedisOptions = { retryStrategy: (attempt) => Math.min(50 * attempt, 2_000) };
  if (redis.tlsCaFile) options.tls = { ca: readFileSync(redis.tlsCaFile) };
  return options;
}

function redactUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}
