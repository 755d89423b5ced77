import { AsmError } from '../errors/kinds.js';
import { isTerminalRunState } from '../schemas/api.js';
import { decodeCursor, encodeCursor, isOffset, isSessionKey, sessionAfter, type Page, type PageRequest, type SessionKey } from './paging.js';
import { byTime, encode, PENDING, QUEUED, type RedisKeys, type ScriptRedis } from './redis-schema.js';
import { admissionSlot, type AdmissionSlot } from './admission-slots.js';
import { RecentMap } from './recent-map.js';
import type { AdmissionCounts, ApprovalRecord, ApprovalStore, ResolveOutcome, RunRecord, RunStore, SessionRecord, SessionStore } from './types.js';

/** One kind of record (hashes under one key builder) and the indexes that name them. */
abstract class RedisRecords<T extends { id: string }> {
  constructor(
    protected readonly redis: ScriptRedis,
    protected readonly keys: RedisKeys,
    private readonly keyOf: (id: string) => string,
    private readonly what: string,
  ) {}

  async get(id: string): Promise<T | undefined> {
    const json = await this.redis.asmGet(this.keyOf(id));
    return json === null ? undefined : (JSON.parse(json) as T);
  }

  protected async put(record: T): Promise<void> {
    await this.redis.asmPut(this.keyOf(record.id), encode(record));
  }

  /** The records of ids, undefined where one is missing (an index entry outliving its record). */
  protected getMany(ids: string[]): Promise<(T | undefined)[]> {
    return Promise.all(ids.map((id) => this.get(id)));
  }

  protected async patch(id: string, patch: Partial<T>): Promise<T> {
    const merged = await this.redis.asmPatch(this.keyOf(id), encode(patch));
    if (!merged) throw new AsmError('not_found', `${this.what} ${id} not found`);
    return JSON.parse(merged) as T;
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

export class RedisSessionStore extends RedisRecords<SessionRecord> implements SessionStore {
  constructor(redis: ScriptRedis, keys: RedisKeys) {
    super(redis, keys, keys.session, 'session');
  }

  async create(session: SessionRecord, limit = Infinity): Promise<boolean> {
    // The count's entry first, taken below the limit in the same step (asmAddBelow); then the tenant's index and the record.
    if ((await this.redis.asmAddBelow(this.keys.sessions, Math.min(limit, Number.MAX_SAFE_INTEGER), session.id)) === 0) return false;
    await Promise.all([
      this.redis.zadd(this.keys.tenantSessions(session.tenant), Date.parse(session.created_at), session.id),
      // A new id is in no index yet: only a record created closed has one to join (update keeps it after).
      session.state === 'closed' ? this.indexClosed(session) : undefined,
      this.put(session),
    ]);
    return true;
  }
  /**
   * The tenant's index is scored by creation time (ms); members of one score are ordered by id, as
   * the cursor's key is. Entries whose record is gone are dropped, so a page may hold fewer than
   * `limit` while `next` still points further.
   */
  async page(tenant: string, request: PageRequest): Promise<Page<SessionRecord>> {
    const key = this.keys.tenantSessions(tenant);
    const after = decodeCursor(request.cursor, isSessionKey);
    const ids: string[] = [];
    let last: SessionKey | undefined;
    // One more than a page tells whether there is a next one; entries of the cursor's own score at or before it are skipped.
    for (let offset = 0; ids.length <= request.limit; ) {
      const batch = await this.redis.zrangebyscore(key, after ? after.at : '-inf', '+inf', 'WITHSCORES', 'LIMIT', offset, request.limit + 1);
      if (batch.length === 0) break;
      offset += batch.length / 2;
      for (let i = 0; i < batch.length && ids.length <= request.limit; i += 2) {
        const entry = { at: Number(batch[i + 1]), id: batch[i] };
        if (after && !sessionAfter(entry, after)) continue;
        ids.push(entry.id);
        if (ids.length <= request.limit) last = entry;
      }
    }
    const more = ids.length > request.limit;
    const items = await this.resolveIndex(ids.slice(0, request.limit), () => true, (id) => this.redis.zrem(key, id));
    return { items, next: more && last ? encodeCursor(last) : null };
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

export class RedisRunStore extends RedisRecords<RunRecord> implements RunStore {
  /**
   * Which session each run belongs to, as far as this process has seen (runs it created or read). A
   * run's session never changes, so an entry is never stale, whichever process writes the run; it is
   * only forgotten. Sent with a run's update: its admission index is in its session's keys. Bounded
   * at about 100 bytes an entry: 10,000 recent runs, 1 MB.
   */
  private readonly sessionOf = new RecentMap<string, string>(10_000);

  constructor(redis: ScriptRedis, keys: RedisKeys) {
    super(redis, keys, keys.run, 'run');
  }

  override async get(id: string): Promise<RunRecord | undefined> {
    const run = await super.get(id);
    if (run) this.sessionOf.set(run.id, run.session_id);
    return run;
  }

  async create(run: RunRecord): Promise<void> {
    this.sessionOf.set(run.id, run.session_id);
    // A new id is in no index yet: only the ones the record joins are written (no SREM of the owned for a run nobody owns).
    const unfinished = !isTerminalRunState(run.state);
    await Promise.all([
      this.indexSlot(run, admissionSlot(run), 1),
      unfinished ? this.redis.sadd(this.keys.unfinishedRuns, run.id) : undefined,
      unfinished && run.owner !== null ? this.redis.sadd(this.keys.ownedRuns, run.id) : undefined,
      this.put(run),
    ]);
  }
  /**
   * Record and indexes in one round trip where this process knows the run's session (a run it created
   * or read: sessionOf): the indexes follow the patch on the connection (so a crash between them
   * leaves at worst a stale entry, which readers drop), each computed from the patch alone where it
   * decides it. The unfinished index changes only when the run ends; the admission slot is checked
   * against the merged record and written again, in a second trip, where the patch did not decide it
   * (a run dispatched after it ended, say) or the session was not known.
   */
  async update(id: string, patch: Partial<RunRecord>): Promise<RunRecord> {
    const sessionId = this.sessionOf.get(id);
    const predicted = sessionId === undefined ? undefined : slotOfPatch(patch);
    const merged = this.patch(id, patch);
    const ended = patch.state !== undefined && isTerminalRunState(patch.state);
    const indexes = Promise.all([
      // Added at create; a run's state never leaves the terminal ones, so only its end changes it.
      ended ? this.redis.srem(this.keys.unfinishedRuns, id) : undefined,
      // Owned: taken by a process (the patch sets its owner) and not ended.
      ended || patch.owner === null ? this.redis.srem(this.keys.ownedRuns, id) : patch.owner !== undefined ? this.redis.sadd(this.keys.ownedRuns, id) : undefined,
      predicted === undefined ? undefined : this.indexSlot({ id, session_id: sessionId! }, predicted, 0),
    ]);
    // A run that is not there leaves at most stale index entries, which readers drop (redis-schema.ts).
    const [run] = await Promise.all([merged, indexes]);
    this.sessionOf.set(run.id, run.session_id);
    if (('state' in patch || 'dispatched' in patch) && admissionSlot(run) !== predicted) await this.indexSlot(run, admissionSlot(run), 0);
    return run;
  }
  /** The owned index follows the claim on the connection, whether it took the run or not: an entry for a run nobody owns is stale, and its readers drop it. */
  async claimLocal(id: string, owner: string): Promise<{ run: RunRecord; claimed: boolean } | undefined> {
    const [reply] = await Promise.all([this.redis.asmClaimLocal(this.keys.run(id), QUEUED, JSON.stringify(owner)), this.redis.sadd(this.keys.ownedRuns, id)]);
    if (!reply) return undefined;
    const run = JSON.parse(reply[1]) as RunRecord;
    this.sessionOf.set(run.id, run.session_id);
    return { run, claimed: reply[0] === 1 };
  }
  async listBySession(sessionId: string): Promise<RunRecord[]> {
    const runs = await this.getMany(await this.redis.lrange(this.keys.sessionRuns(sessionId), 0, -1));
    return runs.filter((run) => run !== undefined);
  }
  async oldestWaiting(sessionId: string): Promise<RunRecord | undefined> {
    const key = this.keys.sessionWaiting(sessionId);
    for (;;) {
      const [id] = await this.redis.zrange(key, 0, 0);
      if (id === undefined) return undefined;
      const run = await this.get(id);
      if (run && admissionSlot(run) === 'waiting') return run;
      // A stale entry (its run moved on, or is gone, and a process died before the index followed).
      await this.redis.zrem(key, id);
    }
  }
  async listUnfinishedBySession(sessionId: string): Promise<RunRecord[]> {
    const [inFlight, waiting] = await Promise.all([this.redis.smembers(this.keys.sessionInFlight(sessionId)), this.redis.zrange(this.keys.sessionWaiting(sessionId), 0, -1)]);
    const runs = await this.getMany([...new Set([...inFlight, ...waiting])]);
    return runs.filter((run): run is RunRecord => run !== undefined && !isTerminalRunState(run.state)).sort(byTime('created_at'));
  }
  async recountInFlight(sessionId: string): Promise<AdmissionCounts> {
    const key = this.keys.sessionInFlight(sessionId);
    const inFlight = await this.resolveIndex(
      await this.redis.smembers(key),
      (run) => admissionSlot(run) === 'in_flight',
      (id) => this.redis.srem(key, id),
    );
    return { inFlight: inFlight.length, waiting: await this.redis.zcard(this.keys.sessionWaiting(sessionId)) };
  }
  async pageBySession(sessionId: string, request: PageRequest): Promise<Page<RunRecord>> {
    const start = decodeCursor(request.cursor, isOffset)?.offset ?? 0;
    // A session's run list only grows (until the session is deleted), so an offset stays put.
    const ids = await this.redis.lrange(this.keys.sessionRuns(sessionId), start, start + request.limit);
    const runs = (await this.getMany(ids.slice(0, request.limit))).filter((run) => run !== undefined);
    return { items: runs, next: ids.length > request.limit ? encodeCursor({ offset: start + request.limit }) : null };
  }
  async listUnfinished(): Promise<RunRecord[]> {
    const ids = await this.redis.smembers(this.keys.unfinishedRuns);
    const runs = await this.resolveIndex(ids, (run) => !isTerminalRunState(run.state), (id) => this.redis.srem(this.keys.unfinishedRuns, id));
    return runs.sort(byTime('created_at'));
  }

  async listOwnedUnfinished(): Promise<RunRecord[]> {
    const ids = await this.redis.smembers(this.keys.ownedRuns);
    return this.resolveIndex(ids, (run) => !isTerminalRunState(run.state) && run.owner !== null, (id) => this.redis.srem(this.keys.ownedRuns, id));
  }

  private indexSlot(run: Pick<RunRecord, 'id' | 'session_id'>, slot: AdmissionSlot, created: 0 | 1): Promise<number> {
    const [runs, waiting, inFlight] = this.keys.groups.runSlots(run.session_id);
    return this.redis.asmRunSlot(runs, waiting, inFlight, run.id, slot, created);
  }
}

export class RedisApprovalStore extends RedisRecords<ApprovalRecord> implements ApprovalStore {
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
    const reply = await this.redis.asmResolve(this.keys.approval(id), PENDING, encode(resolution));
    if (!reply) return { outcome: 'not_found' };
    const approval = JSON.parse(reply[1]) as ApprovalRecord;
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

/**
 * The admission slot (admission-slots.ts) a run takes after `patch`, where the patch alone decides it:
 * an ending or a start decides it; a dispatch does unless the run had ended (the merged record says,
 * and the caller corrects); undefined where the patch does not.
 */
function slotOfPatch(patch: Partial<RunRecord>): AdmissionSlot | undefined {
  if (patch.state !== undefined) {
    if (patch.state !== 'queued') return admissionSlot({ state: patch.state, dispatched: true });
    return patch.dispatched === undefined ? undefined : admissionSlot({ state: 'queued', dispatched: patch.dispatched });
  }
  return patch.dispatched === true ? 'in_flight' : undefined;
}
