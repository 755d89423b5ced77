import type { Logger } from 'pino';
import { guarded, RedisLink, type RedisLinkOptions } from './redis-link.js';
import { RedisEventLog } from './redis-events.js';
import { RedisHoldings } from './redis-holdings.js';
import { RedisApprovalStore, RedisRunStore, RedisSessionStore } from './redis-records.js';
import { redisKeys, withScripts } from './redis-schema.js';
import type { StoredDiff } from '../schemas/workspace.js';
import type { SessionRecord, Store } from './types.js';

/**
 * Distributed mode's store on one Redis: the records (redis-records.ts), the event log
 * (redis-events.ts), the tenants' holdings (redis-holdings.ts), over the keys and scripts of redis-schema.ts, which says why they are shaped so.
 */

export interface RedisStoreOptions extends RedisLinkOptions {
  eventsPerSession: number;
  /** Prefix of every key and channel (default "asm"), so deployments can share a Redis. */
  prefix?: string;
  /** How long createRedisStore waits for the first connection (default 10000 ms). */
  startupTimeoutMs?: number;
  logger?: Pick<Logger, 'info' | 'warn'>;
}

/**
 * Connect and resolve once Redis answers, so the first calls do not fail while connecting. Rejects with
 * not_ready at once when Redis refuses the credentials or the client does not trust its certificate,
 * and when it stays unreachable for startupTimeoutMs.
 */
export async function createRedisStore(options: RedisStoreOptions): Promise<Store> {
  const keys = redisKeys(options.prefix ?? 'asm');
  const logger = options.logger;
  const link = new RedisLink(options, logger);
  // Named after the prefix, so CLIENT LIST tells which deployment a connection serves.
  const redis = withScripts(link.connectBatched({ connectionName: `${keys.prefix}-store` }));
  const subscriber = link.connect({ autoResubscribe: false, connectionName: `${keys.prefix}-events` });
  const toAsmError = (err: unknown) => link.toAsmError(err);

  const sessions = new RedisSessionStore(redis, keys);
  const runs = new RedisRunStore(redis, keys);
  const approvals = new RedisApprovalStore(redis, keys);
  const events = new RedisEventLog(redis, subscriber, keys, options.eventsPerSession, (err, msg) => logger?.warn({ err }, msg));

  /** Delete a session with its runs, approvals and events; the closed index entry goes last, so a crash midway leaves it to be evicted again. */
  async function deleteSession(id: string): Promise<void> {
    const [session, runIds, approvalIds] = await Promise.all([
      sessions.get(id),
      redis.lrange(keys.sessionRuns(id), 0, -1),
      redis.smembers(keys.sessionApprovals(id)),
    ]);
    await Promise.all([
      ...runIds.flatMap((runId) => [redis.del(...keys.groups.runOwned(runId)), redis.srem(keys.unfinishedRuns, runId), redis.srem(keys.ownedRuns, runId)]),
      ...approvalIds.flatMap((approvalId) => [redis.del(keys.approval(approvalId)), redis.zrem(keys.approvalExpiry, approvalId)]),
    ]);
    await redis.del(...keys.groups.sessionOwned(id));
    await Promise.all([redis.srem(keys.sessions, id), session ? redis.zrem(keys.tenantSessions(session.tenant), id) : undefined]);
    await redis.zrem(keys.closedSessions, id);
  }

  const guard = <T extends object>(part: T): T => guarded(part, toAsmError);
  const store = guard<Store>({
    sessions: guard(sessions),
    runs: guard(runs),
    approvals: guard(approvals),
    events: guard(events),
    holdings: guard(new RedisHoldings(redis, keys)),
    diffs: guard({
      put: async (id: string, diff: StoredDiff) => void (await redis.set(keys.diff(id), JSON.stringify(diff))),
      get: async (id: string) => {
        const json = await redis.get(keys.diff(id));
        return json === null ? undefined : (JSON.parse(json) as StoredDiff);
      },
    }),
    async admissionView(sessionId: string) {
      const reply = await redis.asmAdmission(...keys.groups.admission(sessionId));
      if (!reply) return undefined;
      const [json, inFlight, waiting, lastSeq] = reply;
      return { session: JSON.parse(json) as SessionRecord, counts: { inFlight, waiting }, lastSeq };
    },
    async evictOldestClosed() {
      // Two processes evicting at once may pick the same session; deleting is idempotent.
      const [oldest] = await redis.zrange(keys.closedSessions, 0, 0);
      if (oldest === undefined) return undefined;
      await deleteSession(oldest);
      return oldest;
    },
    async ping() {
      await redis.ping();
    },
    async close() {
      events.stopAll();
      await link.close();
    },
  });
  try {
    await link.ready(options.startupTimeoutMs ?? 10_000);
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
