import { AsmError } from '../errors/kinds.js';
import type { AsmEvent } from '../schemas/events.js';
import type { StoredDiff } from '../schemas/workspace.js';
import { isTerminalRunState } from '../schemas/api.js';
import { decodeCursor, encodeCursor, isSessionKey, pageOf, sessionAfter, sessionKey, type Page, type PageRequest, type SessionKey } from './paging.js';
import { admissionSlot } from './admission-slots.js';
import { stampEvent } from './stamp.js';
import type {
  AdmissionCounts,
  ApprovalRecord,
  ApprovalStore,
  EventsJson,
  EventListener,
  EventLog,
  HoldingKind,
  HoldingStore,
  NewEvent,
  ResolveOutcome,
  RunRecord,
  RunStore,
  SessionRecord,
  SessionStore,
  Store,
} from './types.js';

/** Embedded mode's store: plain maps in this process. */

/** Index of the first session listed after `key` (binary search). */
function firstAfter(list: readonly SessionRecord[], key: SessionKey): number {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (sessionAfter(sessionKey(list[mid]), key)) high = mid;
    else low = mid + 1;
  }
  return low;
}

function mustGet<T>(map: Map<string, T>, id: string, what: string): T {
  const value = map.get(id);
  if (!value) throw new AsmError('not_found', `${what} ${id} not found`);
  return value;
}

class MemorySessionStore implements SessionStore {
  private readonly sessions = new Map<string, SessionRecord>();
  /** Each tenant's sessions in list order (creation time, then id). */
  private readonly byTenant = new Map<string, SessionRecord[]>();

  async create(session: SessionRecord, limit = Infinity): Promise<boolean> {
    if (this.sessions.size >= limit && !this.sessions.has(session.id)) return false;
    this.sessions.set(session.id, session);
    const list = this.byTenant.get(session.tenant) ?? [];
    this.byTenant.set(session.tenant, list);
    const key = sessionKey(session);
    // Sessions are created in time order, so this finds the end at once.
    let at = list.length;
    while (at > 0 && sessionAfter(sessionKey(list[at - 1]), key)) at--;
    list.splice(at, 0, session);
    return true;
  }
  async get(id: string): Promise<SessionRecord | undefined> {
    return this.sessions.get(id);
  }
  async page(tenant: string, request: PageRequest): Promise<Page<SessionRecord>> {
    const list = this.byTenant.get(tenant) ?? [];
    const after = decodeCursor(request.cursor, isSessionKey);
    const start = after ? firstAfter(list, after) : 0;
    const items = list.slice(start, start + request.limit);
    const more = start + request.limit < list.length;
    return { items, next: more ? encodeCursor(sessionKey(items.at(-1)!)) : null };
  }
  async update(id: string, patch: Partial<SessionRecord>): Promise<SessionRecord> {
    return Object.assign(mustGet(this.sessions, id, 'session'), patch);
  }
  /** An event was appended: an open session's last_seq stays current, as the Redis store keeps it. */
  noteSeq(id: string, seq: number): void {
    const session = this.sessions.get(id);
    if (session) session.last_seq = seq;
  }
  async count(): Promise<number> {
    return this.sessions.size;
  }
  oldestClosed(): SessionRecord | undefined {
    let oldest: SessionRecord | undefined;
    for (const session of this.sessions.values()) {
      if (session.state === 'closed' && (!oldest || session.closed_at! < oldest.closed_at!)) oldest = session;
    }
    return oldest;
  }
  delete(id: string): void {
    const session = this.sessions.get(id);
    if (!session) return;
    this.sessions.delete(id);
    const list = this.byTenant.get(session.tenant)!;
    list.splice(list.indexOf(session), 1);
  }
}

/** A session's runs by admission slot (admission-slots.ts); a Map keeps the waiting ones in creation order. */
interface SessionSlots {
  inFlight: Map<string, RunRecord>;
  waiting: Map<string, RunRecord>;
}

class MemoryRunStore implements RunStore {
  private readonly runs = new Map<string, RunRecord>();
  private readonly bySession = new Map<string, RunRecord[]>();
  /** The runs not yet terminal, so the orphan sweep does not scan finished history. */
  private readonly unfinished = new Map<string, RunRecord>();
  private readonly slots = new Map<string, SessionSlots>();

  async create(run: RunRecord): Promise<void> {
    this.runs.set(run.id, run);
    this.track(run);
    const list = this.bySession.get(run.session_id) ?? [];
    list.push(run);
    this.bySession.set(run.session_id, list);
  }
  async get(id: string): Promise<RunRecord | undefined> {
    return this.runs.get(id);
  }
  async update(id: string, patch: Partial<RunRecord>): Promise<RunRecord> {
    return this.patched(mustGet(this.runs, id, 'run'), patch);
  }
  async claimLocal(id: string, owner: string): Promise<{ run: RunRecord; claimed: boolean } | undefined> {
    const run = this.runs.get(id);
    if (!run) return undefined;
    const claimed = run.state === 'queued' && run.owner === null && !run.options.remote;
    return { run: claimed ? this.patched(run, { owner }) : run, claimed };
  }
  async listBySession(sessionId: string): Promise<RunRecord[]> {
    return [...(this.bySession.get(sessionId) ?? [])];
  }
  countsOf(sessionId: string): AdmissionCounts {
    const slots = this.slots.get(sessionId);
    return { inFlight: slots?.inFlight.size ?? 0, waiting: slots?.waiting.size ?? 0 };
  }
  async oldestWaiting(sessionId: string): Promise<RunRecord | undefined> {
    return this.slots.get(sessionId)?.waiting.values().next().value;
  }
  async listUnfinishedBySession(sessionId: string): Promise<RunRecord[]> {
    const slots = this.slots.get(sessionId);
    return slots ? [...slots.inFlight.values(), ...slots.waiting.values()].sort(byCreation) : [];
  }
  // The indexes change with the records in one step here, so they never disagree.
  async recountInFlight(sessionId: string): Promise<AdmissionCounts> {
    return this.countsOf(sessionId);
  }
  async pageBySession(sessionId: string, request: PageRequest): Promise<Page<RunRecord>> {
    return pageOf(this.bySession.get(sessionId) ?? [], request);
  }
  async listUnfinished(): Promise<RunRecord[]> {
    return [...this.unfinished.values()];
  }
  // One process owns every run of a memory store; no sweep looks for lost owners in it (sweeps.ts).
  async listOwnedUnfinished(): Promise<RunRecord[]> {
    return [...this.unfinished.values()].filter((run) => run.owner !== null);
  }
  deleteSession(sessionId: string): void {
    for (const run of this.bySession.get(sessionId) ?? []) {
      this.runs.delete(run.id);
      this.unfinished.delete(run.id);
    }
    this.bySession.delete(sessionId);
    this.slots.delete(sessionId);
  }
  /** `run` with `patch` applied, and its indexes following it. */
  private patched(run: RunRecord, patch: Partial<RunRecord>): RunRecord {
    this.track(Object.assign(run, patch));
    return run;
  }
  private track(run: RunRecord): void {
    if (isTerminalRunState(run.state)) this.unfinished.delete(run.id);
    else this.unfinished.set(run.id, run);
    let slots = this.slots.get(run.session_id);
    if (!slots) this.slots.set(run.session_id, (slots = { inFlight: new Map(), waiting: new Map() }));
    const slot = admissionSlot(run);
    if (slot === 'waiting') slots.waiting.set(run.id, run);
    else slots.waiting.delete(run.id);
    if (slot === 'in_flight') slots.inFlight.set(run.id, run);
    else slots.inFlight.delete(run.id);
  }
}

function byCreation(a: RunRecord, b: RunRecord): number {
  return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0;
}

class MemoryApprovalStore implements ApprovalStore {
  private readonly approvals = new Map<string, ApprovalRecord>();
  /** The pending subset, so the lookups made at every run's end do not scan resolved history. */
  private readonly pending = new Map<string, ApprovalRecord>();

  async create(approval: ApprovalRecord): Promise<void> {
    this.approvals.set(approval.id, approval);
    if (approval.state === 'pending') this.pending.set(approval.id, approval);
  }
  async get(id: string): Promise<ApprovalRecord | undefined> {
    return this.approvals.get(id);
  }
  async resolve(id: string, decision: NonNullable<ApprovalRecord['decision']>, reason: string | null): Promise<ResolveOutcome> {
    const approval = this.approvals.get(id);
    if (!approval) return { outcome: 'not_found' };
    if (approval.state !== 'pending') return { outcome: 'already_resolved', approval };
    Object.assign(approval, { state: 'resolved', decision, reason, resolved_at: new Date().toISOString() });
    this.pending.delete(id);
    return { outcome: 'resolved', approval };
  }
  async listPending(filter: { sessionId?: string; runId?: string }): Promise<ApprovalRecord[]> {
    return [...this.pending.values()].filter(
      (a) => (filter.sessionId === undefined || a.session_id === filter.sessionId) && (filter.runId === undefined || a.run_id === filter.runId),
    );
  }
  async listExpired(now: number, limit: number): Promise<ApprovalRecord[]> {
    return [...this.pending.values()]
      .filter((a) => Date.parse(a.expires_at) <= now)
      .sort((a, b) => Date.parse(a.expires_at) - Date.parse(b.expires_at))
      .slice(0, limit);
  }
  deleteSession(sessionId: string): void {
    for (const [id, approval] of this.approvals) {
      if (approval.session_id !== sessionId) continue;
      this.approvals.delete(id);
      this.pending.delete(id);
    }
  }
}

interface SessionLog {
  /** seq of events[0]; seqs are contiguous, so an event's index is seq - firstSeq. */
  firstSeq: number;
  lastSeq: number;
  events: AsmEvent[];
  /**
   * Each event's JSON, at the event's index, made the first time a page holds it (readJson) and kept
   * while the event is: a page's events written anew at every read were half the events route's CPU
   * (bench/RESULTS.md, thirty-ninth pass). Events are never changed once appended.
   */
  json: Array<string | undefined>;
}

class MemoryEventLog implements EventLog {
  private readonly logs = new Map<string, SessionLog>();
  private readonly listeners = new Map<string | null, Set<EventListener>>();

  constructor(
    private readonly maxPerSession: number,
    private readonly sessions: MemorySessionStore,
  ) {}

  async append(event: NewEvent): Promise<AsmEvent> {
    let log = this.logs.get(event.session_id);
    if (!log) {
      log = { firstSeq: 1, lastSeq: 0, events: [], json: [] };
      this.logs.set(event.session_id, log);
    }
    const stored: AsmEvent = { ...stampEvent(event), seq: ++log.lastSeq };
    log.events.push(stored);
    log.json.push(undefined);
    this.sessions.noteSeq(event.session_id, stored.seq);
    // Trim in batches so the cost of dropping old events stays amortised O(1) per append.
    const overflow = log.events.length - this.maxPerSession;
    if (overflow >= Math.max(1, this.maxPerSession >> 3)) {
      log.events.splice(0, overflow);
      log.json.splice(0, overflow);
      log.firstSeq += overflow;
    }
    this.publish(stored);
    return stored;
  }

  async read(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<AsmEvent[]> {
    const log = this.logs.get(sessionId);
    return log ? this.indexesOf(log, opts).map((i) => log.events[i]) : [];
  }

  async readJson(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<EventsJson> {
    const log = this.logs.get(sessionId);
    if (!log) return { json: '', lastSeq: null };
    const indexes = this.indexesOf(log, opts);
    const json = indexes.map((i) => (log.json[i] ??= JSON.stringify(log.events[i])));
    return { json: json.join(','), lastSeq: indexes.length > 0 ? log.events[indexes[indexes.length - 1]].seq : null };
  }

  /** Where in the log the events a read answers are: after `after`, of `runId` where given, at most `limit`. */
  private indexesOf(log: SessionLog, opts: { after: number; runId?: string; limit: number }): number[] {
    const out: number[] = [];
    for (let i = Math.max(0, opts.after + 1 - log.firstSeq); i < log.events.length && out.length < opts.limit; i++) {
      if (opts.runId === undefined || log.events[i].run_id === opts.runId) out.push(i);
    }
    return out;
  }

  deleteSession(sessionId: string): void {
    this.logs.delete(sessionId);
  }

  async lastSeq(sessionId: string): Promise<number> {
    return this.seqOf(sessionId);
  }
  seqOf(sessionId: string): number {
    return this.logs.get(sessionId)?.lastSeq ?? 0;
  }

  subscribe(sessionId: string | null, listener: EventListener): () => void {
    let set = this.listeners.get(sessionId);
    if (!set) {
      set = new Set();
      this.listeners.set(sessionId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(sessionId);
    };
  }

  private publish(event: AsmEvent): void {
    for (const key of [event.session_id, null]) {
      const set = this.listeners.get(key);
      if (!set) continue;
      for (const listener of set) listener(event);
    }
  }
}

class MemoryHoldings implements HoldingStore {
  /** `tenant kind` → id → when it was taken (ms). */
  private readonly held = new Map<string, Map<string, number>>();

  async take(tenant: string, kind: HoldingKind, id: string, limit: number): Promise<boolean> {
    const held = this.of(tenant, kind);
    if (held.has(id)) return true;
    if (held.size >= limit) return false;
    held.set(id, Date.now());
    return true;
  }
  async add(tenant: string, kind: HoldingKind, id: string): Promise<void> {
    const held = this.of(tenant, kind);
    if (!held.has(id)) held.set(id, Date.now());
  }
  async release(tenant: string, kind: HoldingKind, id: string): Promise<void> {
    this.held.get(`${tenant} ${kind}`)?.delete(id);
  }
  async takenBefore(tenant: string, kind: HoldingKind, before: number): Promise<string[]> {
    return [...(this.held.get(`${tenant} ${kind}`) ?? [])].filter(([, at]) => at < before).map(([id]) => id);
  }
  private of(tenant: string, kind: HoldingKind): Map<string, number> {
    const key = `${tenant} ${kind}`;
    let held = this.held.get(key);
    if (!held) this.held.set(key, (held = new Map()));
    return held;
  }
}

export function createMemoryStore(opts: { eventsPerSession: number }): Store {
  const diffs = new Map<string, StoredDiff>();
  const sessions = new MemorySessionStore();
  const runs = new MemoryRunStore();
  const approvals = new MemoryApprovalStore();
  const events = new MemoryEventLog(opts.eventsPerSession, sessions);
  return {
    sessions,
    runs,
    approvals,
    events,
    holdings: new MemoryHoldings(),
    diffs: {
      put: async (id, diff) => void diffs.set(id, diff),
      get: async (id) => diffs.get(id),
    },
    async admissionView(sessionId) {
      const session = await sessions.get(sessionId);
      return session && { session, counts: runs.countsOf(sessionId), lastSeq: events.seqOf(sessionId) };
    },
    async evictOldestClosed() {
      const session = sessions.oldestClosed();
      if (!session) return undefined;
      for (const id of [session.id, ...(await runs.listBySession(session.id)).map((run) => run.id)]) diffs.delete(id);
      for (const part of [runs, approvals, events]) part.deleteSession(session.id);
      sessions.delete(session.id);
      return session.id;
    },
    async ping() {},
    async close() {},
  };
}
