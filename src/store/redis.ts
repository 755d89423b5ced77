import type { Redis } from 'ioredis';
import { guarded, RedisLink, type RedisLinkOptions } from './redis-link.js';
import type { Logger } from 'pino';
import { AsmError } from '../errors.js';
import type { AsmEvent } from '../schemas/events.js';
import { isTerminalRunState } from '../schemas/api.js';
import { CatchUpCursor } from './catch-up.js';
import { stampEvent } from './stamp.js';
import type {
  ApprovalRecord,
  ApprovalStore,
  EventListener,
  EventLog,
  NewEvent,
  ResolveOutcome,
  RunRecord,
  RunStore,
  SessionRecord,
  SessionStore,
  Store,
} from './types.js';

/**
 * Distributed mode's store: several API processes share one Redis, and any of them may be SIGKILLed at
 * any moment, so everything lives in Redis and no process holds state another one needs.
 *
 * Key layout (prefix `asm` by default; `{…}` is the Redis Cluster hash tag):
 *
 *   asm:{ses_…}:session            hash   the session record, one field per top-level property (JSON)
 *   asm:{ses_…}:seq                string the session's last seq (INCR)
 *   asm:{ses_…}:events             stream the events, entry id `<seq>-0`, trimmed to eventsPerSession
 *   asm:{ses_…}:runs               list   run ids in creation order
 *   asm:{ses_…}:approvals          set    every approval id of the session (for eviction)
 *   asm:{ses_…}:pending            set    pending approval ids of the session
 *   asm:{run_…}:run                hash   the run record
 *   asm:{run_…}:pending            set    pending approval ids of the run
 *   asm:{<approval id>}:approval   hash   the approval record
 *   asm:sessions                   set    every session id (count)
 *   asm:tenant:<tenant>:sessions   zset   the tenant's session ids by created_at
 *   asm:sessions:closed            zset   closed session ids by closed_at (eviction, oldest first)
 *   asm:runs:unfinished            set    ids of runs queued or running (orphan sweep)
 *   asm:approvals:expiry           zset   pending approval ids by expires_at (timeout sweep)
 *   channel asm:events:<ses_…>     the session's live events, published by the append script
 *
 * Why it is shaped this way:
 * - Records are hashes of JSON fields, not one JSON string: an update is an HSET of the patched fields
 *   inside a script that first checks the record exists, so concurrent updates of different fields
 *   from different processes never lose each other, a deleted record is never resurrected, and values
 *   round-trip exactly (Lua never parses them, so cjson cannot turn [] into {}).
 * - Every script or multi-key command touches keys of one hash tag only (redisKeys().groups lists
 *   them; a test checks they share a slot), so the store runs on Redis Cluster. Indexes span sessions
 *   and so live in other slots; they are maintained by separate single-key commands, written before
 *   the record they point at. A crash between the two leaves an index entry without a record, or a
 *   stale entry; readers treat indexes as hints, check the record, and remove what is stale.
 * - One script assigns seq (INCR), adds the stream entry with id `<seq>-0`, stamps the session's
 *   last_seq and PUBLISHes: seq is gap-free across processes, a read after a cursor is an XRANGE
 *   from `<cursor+1>`, and publication order is seq order, so each subscriber connection receives a
 *   session's events in seq order. The session's last_seq is thereby current in every process (the
 *   memory store leaves it to the service, which sets it at close).
 * - Pub/sub loses what is published while a subscriber is disconnected or not yet subscribed. So each
 *   subscribed session is followed with a cursor (catch-up.ts): on (re)subscription and on any seq gap
 *   the missing events are read from the stream, and a listener never misses an event appended after
 *   subscribe().
 *   All-session listeners (live only, by contract) are not caught up.
 * - While Redis is unreachable calls fail at once (no offline queue, a command timeout, no replay of
 *   in-flight commands after a reconnect, which could append an event twice) with not_ready, i.e.
 *   HTTP 503; the connections keep reconnecting and the store works again without a restart. A call
 *   that timed out may still have taken effect.
 */

export interface RedisStoreOptions extends RedisLinkOptions {
  eventsPerSession: number;
  /** Prefix of every key and channel (default "asm"), so deployments can share a Redis. */
  prefix?: string;
  /** How long createRedisStore waits for the first connection (default 10000 ms). */
  startupTimeoutMs?: number;
  logger?: Pick<Logger, 'info' | 'warn'>;
}

export type RedisKeys = ReturnType<typeof redisKeys>;

export function redisKeys(prefix: string) {
  const tagged = (id: string, what: string) => `${prefix}:{${id}}:${what}`;
  const keys = {
    prefix,
    session: (id: string) => tagged(id, 'session'),
    seq: (sessionId: string) => tagged(sessionId, 'seq'),
    events: (sessionId: string) => tagged(sessionId, 'events'),
    sessionRuns: (sessionId: string) => tagged(sessionId, 'runs'),
    sessionApprovals: (sessionId: string) => tagged(sessionId, 'approvals'),
    sessionPending: (sessionId: string) => tagged(sessionId, 'pending'),
    run: (id: string) => tagged(id, 'run'),
    runPending: (runId: string) => tagged(runId, 'pending'),
    approval: (id: string) => tagged(id, 'approval'),
    sessions: `${prefix}:sessions`,
    tenantSessions: (tenant: string) => `${prefix}:tenant:${tenant}:sessions`,
    closedSessions: `${prefix}:sessions:closed`,
    unfinishedRuns: `${prefix}:runs:unfinished`,
    approvalExpiry: `${prefix}:approvals:expiry`,
    channel: (sessionId: string) => `${prefix}:events:${sessionId}`,
    allChannels: `${prefix.replace(/[*?[\]\\]/g, '\\$&')}:events:*`,
  };
  return {
    ...keys,
    /** The keys of each script or command that touches several keys; each group must share one cluster slot. */
    groups: {
      append: (sessionId: string) => [keys.seq(sessionId), keys.events(sessionId), keys.session(sessionId)],
      sessionOwned: (sessionId: string) => [
        keys.session(sessionId),
        keys.seq(sessionId),
        keys.events(sessionId),
        keys.sessionRuns(sessionId),
        keys.sessionApprovals(sessionId),
        keys.sessionPending(sessionId),
      ],
      runOwned: (runId: string) => [keys.run(runId), keys.runPending(runId)],
    },
  };
}

/** Lua scripts, each on the keys of one hash tag. Record field values are opaque JSON strings to Lua. */
const SCRIPTS = {
  /** Replace a record. */
  asmPut: {
    numberOfKeys: 1,
    lua: `redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1`,
  },
  /** Merge top-level fields into an existing record; nil when there is none. */
  asmPatch: {
    numberOfKeys: 1,
    lua: `if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return redis.call('HGETALL', KEYS[1])`,
  },
  /** ARGV[1] is the encoded pending state, the rest the resolution's fields: {1, record} when this call resolved it, {0, record} when it was not pending. */
  asmResolve: {
    numberOfKeys: 1,
    lua: `local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= ARGV[1] then return {0, redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return {1, redis.call('HGETALL', KEYS[1])}`,
  },
  /** KEYS: seq, events, session. ARGV: maxlen, channel, the event's JSON without seq (an object with fields). Returns the seq. */
  asmAppend: {
    numberOfKeys: 3,
    lua: `local seq = redis.call('INCR', KEYS[1])
local digits = string.format('%d', seq)
local json = '{"seq":' .. digits .. ',' .. string.sub(ARGV[3], 2)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], digits .. '-0', 'e', json)
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'last_seq', digits) end
redis.call('PUBLISH', ARGV[2], json)
return seq`,
  },
} as const;

type ScriptRedis = Redis & {
  asmPut(key: string, ...fields: string[]): Promise<number>;
  asmPatch(key: string, ...fields: string[]): Promise<string[] | null>;
  asmResolve(key: string, pending: string, ...fields: string[]): Promise<[number, string[]] | null>;
  asmAppend(seqKey: string, eventsKey: string, sessionKey: string, maxlen: number, channel: string, json: string): Promise<number>;
};

const PENDING = JSON.stringify('pending');
/** Stream entries read per XRANGE when filtering or catching up. */
const PAGE = 500;

/** Field/value arguments for HSET: each defined top-level property as JSON. */
function encode(record: object): string[] {
  return Object.entries(record).flatMap(([field, value]) => (value === undefined ? [] : [field, JSON.stringify(value)]));
}

function decodePairs<T>(flat: string[]): T {
  const record: Record<string, unknown> = {};
  for (let i = 0; i < flat.length; i += 2) record[flat[i]] = JSON.parse(flat[i + 1]);
  return record as T;
}

function decodeHash<T>(hash: Record<string, string>): T | undefined {
  const fields = Object.keys(hash);
  if (fields.length === 0) return undefined;
  return Object.fromEntries(fields.map((field) => [field, JSON.parse(hash[field])])) as T;
}

function byTime<T>(field: keyof T) {
  return (a: T, b: T) => Date.parse(a[field] as string) - Date.parse(b[field] as string);
}

/** One kind of record (hashes under one key builder) and the indexes that name them. */
abstract class RedisRecords<T extends { id: string }> {
  constructor(
    protected readonly redis: ScriptRedis,
    protected readonly keys: RedisKeys,
    private readonly keyOf: (id: string) => string,
    private readonly what: string,
  ) {}

  async get(id: string): Promise<T | undefined> {
    return decodeHash<T>(await this.redis.hgetall(this.keyOf(id)));
  }

  protected async put(record: T): Promise<void> {
    await this.redis.asmPut(this.keyOf(record.id), ...encode(record));
  }

  /** The records of ids, undefined where one is missing (an index entry outliving its record). */
  protected getMany(ids: string[]): Promise<(T | undefined)[]> {
    return Promise.all(ids.map((id) => this.get(id)));
  }

  protected async patch(id: string, patch: Partial<T>): Promise<T> {
    const merged = await this.redis.asmPatch(this.keyOf(id), ...encode(patch));
    if (!merged) throw new AsmError('not_found', `${this.what} ${id} not found`);
    return decodePairs<T>(merged);
  }

  /** Look up the records an index names; drop the entries whose record is missing or no longer qualifies. */
  protected async resolveIndex(ids: string[], keep: (record: T) => boolean, drop: (id: string, record: T | undefined) => Promise<unknown>): Promise<T[]> {
    const found = await this.getMany(ids);
    const kept: T[] = [];
    const stale: Promise<unknown>[] = [];
    found.forEach((record, i) => {
      if (record && keep(record)) kept.push(record);
      else stale.push(drop(ids[i], record));
    });
    await Promise.all(stale);
    return kept;
  }
}

class RedisSessionStore extends RedisRecords<SessionRecord> implements SessionStore {
  constructor(redis: ScriptRedis, keys: RedisKeys) {
    super(redis, keys, keys.session, 'session');
  }

  async create(session: SessionRecord): Promise<void> {
    await Promise.all([
      this.redis.zadd(this.keys.tenantSessions(session.tenant), Date.parse(session.created_at), session.id),
      this.redis.sadd(this.keys.sessions, session.id),
      this.indexClosed(session),
      this.put(session),
    ]);
  }
  async list(tenant: string): Promise<SessionRecord[]> {
    const key = this.keys.tenantSessions(tenant);
    const ids = await this.redis.zrange(key, 0, -1);
    return this.resolveIndex(ids, () => true, (id) => this.redis.zrem(key, id));
  }
  async update(id: string, patch: Partial<SessionRecord>): Promise<SessionRecord> {
    const session = await this.patch(id, patch);
    if ('state' in patch || 'closed_at' in patch) await this.indexClosed(session);
    return session;
  }
  count(): Promise<number> {
    return this.redis.scard(this.keys.sessions);
  }

  private indexClosed(session: SessionRecord): Promise<number> {
    return session.state === 'closed'
      ? this.redis.zadd(this.keys.closedSessions, Date.parse(session.closed_at ?? session.created_at), session.id)
      : this.redis.zrem(this.keys.closedSessions, session.id);
  }
}

class RedisRunStore extends RedisRecords<RunRecord> implements RunStore {
  constructor(redis: ScriptRedis, keys: RedisKeys) {
    super(redis, keys, keys.run, 'run');
  }

  async create(run: RunRecord): Promise<void> {
    await Promise.all([this.redis.rpush(this.keys.sessionRuns(run.session_id), run.id), this.indexUnfinished(run), this.put(run)]);
  }
  async update(id: string, patch: Partial<RunRecord>): Promise<RunRecord> {
    const run = await this.patch(id, patch);
    if ('state' in patch) await this.indexUnfinished(run);
    return run;
  }
  async listBySession(sessionId: string): Promise<RunRecord[]> {
    const runs = await this.getMany(await this.redis.lrange(this.keys.sessionRuns(sessionId), 0, -1));
    return runs.filter((run) => run !== undefined);
  }
  async listUnfinished(): Promise<RunRecord[]> {
    const ids = await this.redis.smembers(this.keys.unfinishedRuns);
    const runs = await this.resolveIndex(ids, (run) => !isTerminalRunState(run.state), (id) => this.redis.srem(this.keys.unfinishedRuns, id));
    return runs.sort(byTime('created_at'));
  }

  private indexUnfinished(run: RunRecord): Promise<number> {
    return isTerminalRunState(run.state) ? this.redis.srem(this.keys.unfinishedRuns, run.id) : this.redis.sadd(this.keys.unfinishedRuns, run.id);
  }
}

class RedisApprovalStore extends RedisRecords<ApprovalRecord> implements ApprovalStore {
  constructor(redis: ScriptRedis, keys: RedisKeys) {
    super(redis, keys, keys.approval, 'approval');
  }

  async create(approval: ApprovalRecord): Promise<void> {
    const pendingIndexes =
      approval.state === 'pending'
        ? [
            this.redis.sadd(this.keys.runPending(approval.run_id), approval.id),
            this.redis.sadd(this.keys.sessionPending(approval.session_id), approval.id),
            this.redis.zadd(this.keys.approvalExpiry, Date.parse(approval.expires_at), approval.id),
          ]
        : [];
    await Promise.all([...pendingIndexes, this.redis.sadd(this.keys.sessionApprovals(approval.session_id), approval.id), this.put(approval)]);
  }
  async resolve(id: string, decision: NonNullable<ApprovalRecord['decision']>, reason: string | null): Promise<ResolveOutcome> {
    const resolution = { state: 'resolved', decision, reason, resolved_at: new Date().toISOString() };
    const reply = await this.redis.asmResolve(this.keys.approval(id), PENDING, ...encode(resolution));
    if (!reply) return { outcome: 'not_found' };
    const approval = decodePairs<ApprovalRecord>(reply[1]);
    if (reply[0] === 0) return { outcome: 'already_resolved', approval };
    await this.unindexPending(id, approval);
    return { outcome: 'resolved', approval };
  }
  async listPending(filter: { sessionId?: string; runId?: string }): Promise<ApprovalRecord[]> {
    const ids =
      filter.runId !== undefined
        ? await this.redis.smembers(this.keys.runPending(filter.runId))
        : filter.sessionId !== undefined
          ? await this.redis.smembers(this.keys.sessionPending(filter.sessionId))
          : await this.redis.zrange(this.keys.approvalExpiry, 0, -1);
    const pending = await this.resolvePending(ids);
    return pending
      .filter((a) => (filter.sessionId === undefined || a.session_id === filter.sessionId) && (filter.runId === undefined || a.run_id === filter.runId))
      .sort(byTime('requested_at'));
  }
  async listExpired(now: number, limit: number): Promise<ApprovalRecord[]> {
    const expired: ApprovalRecord[] = [];
    // Stale entries are removed as they are met, so the next page starts after the ones already taken.
    while (expired.length < limit) {
      const ids = await this.redis.zrangebyscore(this.keys.approvalExpiry, '-inf', now, 'LIMIT', expired.length, limit - expired.length);
      if (ids.length === 0) break;
      expired.push(...(await this.resolvePending(ids)));
    }
    return expired;
  }

  /** Pending approvals of ids; the ones resolved or gone are taken out of every pending index. */
  private resolvePending(ids: string[]): Promise<ApprovalRecord[]> {
    return this.resolveIndex(ids, (a) => a.state === 'pending', (id, approval) => this.unindexPending(id, approval));
  }

  private unindexPending(id: string, approval: ApprovalRecord | undefined): Promise<unknown> {
    const byOwner = approval
      ? [this.redis.srem(this.keys.runPending(approval.run_id), id), this.redis.srem(this.keys.sessionPending(approval.session_id), id)]
      : [];
    return Promise.all([...byOwner, this.redis.zrem(this.keys.approvalExpiry, id)]);
  }
}

interface SessionFeed {
  listeners: Set<EventListener>;
  /** Hands the listeners the session's events in seq order, reading from the stream what pub/sub missed. */
  cursor: CatchUpCursor;
}

class RedisEventLog implements EventLog {
  private readonly feeds = new Map<string, SessionFeed>();
  private readonly allListeners = new Set<EventListener>();

  constructor(
    private readonly redis: ScriptRedis,
    private readonly subscriber: Redis,
    private readonly keys: RedisKeys,
    private readonly maxPerSession: number,
    private readonly warn: (err: unknown, msg: string) => void,
  ) {
    subscriber.on('message', (channel: string, message: string) => this.received(channel, message, (event) => this.onSessionMessage(event)));
    subscriber.on('pmessage', (_pattern: string, channel: string, message: string) => this.received(channel, message, (event) => this.deliverToAll(event)));
    // Subscriptions are renewed here rather than by ioredis, so the catch-up read follows the renewal.
    subscriber.on('ready', () => {
      if (this.feeds.size > 0) this.activate([...this.feeds.keys()]);
      if (this.allListeners.size > 0) this.toSubscriber((sub) => sub.psubscribe(this.keys.allChannels));
    });
  }

  async append(event: NewEvent): Promise<AsmEvent> {
    const stamped = stampEvent(event);
    const sessionId = event.session_id;
    const seq = await this.redis.asmAppend(
      ...(this.keys.groups.append(sessionId) as [string, string, string]),
      this.maxPerSession,
      this.keys.channel(sessionId),
      JSON.stringify(stamped),
    );
    return { ...stamped, seq };
  }

  async read(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<AsmEvent[]> {
    const out: AsmEvent[] = [];
    let after = opts.after;
    while (out.length < opts.limit) {
      const count = opts.runId === undefined ? Math.min(opts.limit - out.length, PAGE) : PAGE;
      const entries = await this.redis.xrange(this.keys.events(sessionId), `${after + 1}-0`, '+', 'COUNT', count);
      for (const [, fields] of entries) {
        const event = JSON.parse(fields[1]) as AsmEvent;
        if (out.length < opts.limit && (opts.runId === undefined || event.run_id === opts.runId)) out.push(event);
      }
      if (entries.length < count) break;
      after = Number.parseInt(entries[entries.length - 1][0], 10);
    }
    return out;
  }

  async lastSeq(sessionId: string): Promise<number> {
    return Number((await this.redis.get(this.keys.seq(sessionId))) ?? 0);
  }

  subscribe(sessionId: string | null, listener: EventListener): () => void {
    if (sessionId === null) {
      if (this.allListeners.size === 0) this.toSubscriber((sub) => sub.psubscribe(this.keys.allChannels));
      this.allListeners.add(listener);
      return () => {
        if (this.allListeners.delete(listener) && this.allListeners.size === 0) this.toSubscriber((sub) => sub.punsubscribe(this.keys.allChannels));
      };
    }
    let feed = this.feeds.get(sessionId);
    if (!feed) {
      const listeners = new Set<EventListener>();
      const cursor = new CatchUpCursor(this, {
        sessionId,
        // Sent on the command connection before anything this process appends or reads afterwards, so
        // every event appended after subscribe() returns lies above this baseline.
        after: this.redis.get(this.keys.seq(sessionId)).then((seq) => Number(seq ?? 0)),
        pageSize: PAGE,
        deliver: (event) => this.callEach(listeners, event),
        // Live delivery goes on; followers read a gap from the store themselves.
        onCatchUpFailure: (err) => this.warn(err, 'could not read the events missed by a live subscription'),
      });
      feed = { listeners, cursor };
      this.feeds.set(sessionId, feed);
      this.activate([sessionId]);
    }
    const joined = feed;
    joined.listeners.add(listener);
    return () => {
      if (!joined.listeners.delete(listener) || joined.listeners.size > 0 || this.feeds.get(sessionId) !== joined) return;
      joined.cursor.stop();
      this.feeds.delete(sessionId);
      this.toSubscriber((sub) => sub.unsubscribe(this.keys.channel(sessionId)));
    };
  }

  stopAll(): void {
    for (const feed of this.feeds.values()) feed.cursor.stop();
    this.feeds.clear();
    this.allListeners.clear();
  }

  /** Subscribe to the sessions' channels; once Redis confirms, read what was appended before that. */
  private activate(sessionIds: string[]): void {
    this.toSubscriber(async (sub) => {
      await sub.subscribe(...sessionIds.map((id) => this.keys.channel(id)));
      for (const id of sessionIds) void this.feeds.get(id)?.cursor.catchUp();
    });
  }

  /**
   * (Un)subscribe only on a ready connection: ioredis would send it during the handshake too, which
   * turns the connection into subscriber mode and fails its ready check. Whatever is skipped or
   * refused while disconnected is done by the 'ready' handler.
   */
  private toSubscriber(command: (subscriber: Redis) => Promise<unknown>): void {
    if (this.subscriber.status === 'ready') command(this.subscriber).catch((err) => this.warn(err, 'a subscription command failed'));
  }

  /** Anyone with access may publish on the channels; what is not an event is reported, not thrown into ioredis. */
  private received(channel: string, message: string, handle: (event: AsmEvent) => void): void {
    let event: AsmEvent;
    try {
      event = JSON.parse(message) as AsmEvent;
    } catch (err) {
      return this.warn(err, `ignored a message on ${channel} that is not an event`);
    }
    handle(event);
  }

  private onSessionMessage(event: AsmEvent): void {
    void this.feeds.get(event.session_id)?.cursor.live(event);
  }

  private deliverToAll(event: AsmEvent): void {
    this.callEach(this.allListeners, event);
  }

  private callEach(listeners: Set<EventListener>, event: AsmEvent): void {
    for (const listener of [...listeners]) {
      try {
        listener(event);
      } catch (err) {
        this.warn(err, 'an event listener threw');
      }
    }
  }
}

/**
 * Connect and resolve once Redis answers, so the first calls do not fail while connecting. Rejects with
 * not_ready when Redis refuses the credentials or stays unreachable for startupTimeoutMs.
 */
export async function createRedisStore(options: RedisStoreOptions): Promise<Store> {
  const keys = redisKeys(options.prefix ?? 'asm');
  const logger = options.logger;
  const link = new RedisLink(options, logger);
  // Named after the prefix, so CLIENT LIST tells which deployment a connection serves.
  const redis = link.connect({ connectionName: `${keys.prefix}-store` }) as ScriptRedis;
  for (const [name, script] of Object.entries(SCRIPTS)) redis.defineCommand(name, script);
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
      ...runIds.flatMap((runId) => [redis.del(...keys.groups.runOwned(runId)), redis.srem(keys.unfinishedRuns, runId)]),
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
