import type { Logger } from 'pino';
import type { Infrastructure } from './infrastructure.js';
import type { AsmConfig, RedisSettings } from './config.js';
import { BullMQLaneEngine } from './lanes/bullmq-engine.js';
import type { EngineOptions, LaneEngine } from './lanes/types.js';
import { OwnerUnreachable, type Cluster, type SelfReport } from './nodes/cluster.js';
import { RedisCluster } from './nodes/redis.js';
import { guarded, RedisLink } from './store/redis-link.js';
import { createRedisStore } from './store/redis.js';

/** How long start-up waits for Redis before the process gives up with a clear error. */
const STARTUP_TIMEOUT_MS = 10_000;

/**
 * Distributed mode's parts, all on one Redis: the Redis store, the BullMQ lane engine and the
 * cluster of API processes and workers. Every connection is made from the same settings, so a
 * `rediss://` URL, an ACL user or a private CA apply everywhere. A worker brings its own engine
 * (`localEngine`): it takes runs handed to it, not jobs from the shared lanes.
 */
export async function connectDistributed(
  config: AsmConfig,
  redis: RedisSettings,
  engineOptions: EngineOptions,
  self: string,
  report: SelfReport,
  logger: Logger,
  localEngine?: LaneEngine,
): Promise<Infrastructure> {
  const linkOptions = { url: redis.url, commandTimeoutMs: redis.commandTimeoutMs, tlsCaFile: redis.tlsCaFile };
  const store = await createRedisStore({
    ...linkOptions,
    prefix: redis.prefix,
    eventsPerSession: config.limits.eventsPerSession,
    startupTimeoutMs: STARTUP_TIMEOUT_MS,
    logger,
  });
  const link = new RedisLink(linkOptions, logger);
  const redisCluster = new RedisCluster({
    self,
    redis: link.connectBatched({ connectionName: `${redis.prefix}-cluster` }),
    subscriber: link.connect({ connectionName: `${redis.prefix}-control` }),
    prefix: redis.prefix,
    report,
    heartbeatMs: config.cluster.heartbeatMs,
    ttlMs: config.cluster.nodeTtlMs,
    // A holder renews its lease while it works; one that died frees the lock before a waiter gives up.
    lockLeaseMs: redis.commandTimeoutMs * 2,
    lockWaitMs: redis.commandTimeoutMs * 5,
    initialState: config.worker ? 'starting' : 'ready',
  });
  const limits = link.connect({ connectionName: `${redis.prefix}-limits` });
  try {
    await link.ready(STARTUP_TIMEOUT_MS);
    await link.checkAccess([`${redis.prefix}:access-check`, `{${redis.prefix}}:access-check`]);
  } catch (err) {
    await Promise.all([store.close(), link.close()]);
    throw err;
  }
  const cluster: Cluster = guarded(redisCluster, (err) => (err instanceof OwnerUnreachable ? err : link.toAsmError(err)));
  const engine =
    localEngine ??
    new BullMQLaneEngine({
      ...engineOptions,
      connection: redis.url,
      // BullMQ's blocking connections must wait out an outage rather than fail fast; only TLS is shared.
      redisOptions: link.connectionOptions.tls ? { tls: link.connectionOptions.tls } : undefined,
      prefix: `{${redis.prefix}}`,
      lockDurationMs: config.cluster.jobLockMs,
      stalledIntervalMs: config.cluster.stalledIntervalMs,
      commandTimeoutMs: redis.commandTimeoutMs,
    });
  logger.info({ redis: redactUrl(redis.url), prefix: redis.prefix, instance: self }, 'distributed mode: state in Redis, lanes on BullMQ');
  return { store, engine, cluster, redis: limits, close: () => link.close() };
}

function redactUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}
