/**
 * What every Store must do, whatever keeps the data: the memory store runs it, and so does the Redis
 * store, where several processes share one Redis. A test works in one "deployment" (a namespace of
 * data) and may open several stores on it, as several API processes would; for the memory store they
 * are one and the same store. Waits poll with generous limits; every store a test opens is closed.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { AsmError } from '../../src/errors/kinds.js';
import type { AsmEvent, EventMetadata } from '../../src/schemas/events.js';
import type { ApprovalRecord, EventsJson, NewEvent, RemoteOptions, RunRecord, SessionRecord, Store } from '../../src/store/types.js';
import { waitFor } from '../helpers/wait.js';

export interface StoreDeployment {
  /** A store as one process sees it; every store opened from one deployment shares its data. */
  open(): Promise<Store>;
}

export type DeploymentFactory = (options: { eventsPerSession: number }) => StoreDeployment;

const METADATA: EventMetadata = {
  requested_lane: 'auto',
  preferred_lane: 'core',
  lane: 'core',
  backend: 'core',
  execution_mode: 'local',
  lane_reason: 'sdk_unavailable',
  lane_fallback_reason: null,
  sdk_runtime: null,
  sdk_available: false,
  capabilities: [],
  node: 'node-a',
  queue: 'prompt',
};

const at = (ms: number) => new Date(Date.UTC(2030, 0, 1) + ms).toISOString();

export function sessionRecord(overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id: `ses_${randomUUID()}`,
    tenant: 'default',
    provider: 'shell',
    lane: 'auto',
    execution_mode: 'local',
    execution_surface: { kind: 'local_subprocess' },
    driver_opts: {},
    cwd: '/tmp/work',
    model: null,
    permission_mode: 'default',
    provider_permission_mode: 'default',
    approval_posture: null,
    allowed_tools: [],
    system_prompt: null,
    max_turns: null,
    reasoning_effort: null,
    queue: 'prompt',
    max_concurrent_runs: 1,
    max_queued_runs: 10,
    approval_timeout_ms: 120_000,
    run_deadline_ms: 600_000,
    idle_timeout_ms: 300_000,
    warm: false,
    warm_idle_ms: null,
    metadata: {},
    state: 'open',
    provider_session_id: null,
    granted_tools: [],
    last_seq: 0,
    created_at: at(0),
    closed_at: null,
    ...overrides,
  };
}

export function runRecord(session: SessionRecord, overrides: Partial<RunRecord> = {}): RunRecord {
  return {
    id: `run_${randomUUID()}`,
    session_id: session.id,
    tenant: session.tenant,
    provider: session.provider,
    state: 'queued',
    queue: 'prompt',
    prompt: 'say "hi" — ünïcødé',
    metadata: {},
    created_at: at(0),
    started_at: null,
    finished_at: null,
    result: null,
    dispatched: false,
    observability: METADATA,
    owner: null,
    interrupt_requested: false,
    options: {
      lane: 'auto',
      execution_mode: 'local',
      driver_opts: {},
      continuation: true,
      agent: { model: null, permission_mode: 'default', provider_permission_mode: 'default', allowed_tools: [], system_prompt: null, max_turns: null, reasoning_effort: null },
      output_limit_bytes: 1024 * 1024,
    },
    ...overrides,
  };
}

export function approvalRecord(run: RunRecord, overrides: Partial<ApprovalRecord> = {}): ApprovalRecord {
  return {
    id: `apr_${randomUUID()}`,
    tenant: run.tenant,
    session_id: run.session_id,
    run_id: run.id,
    subject: 'Bash',
    tool_input: { command: 'ls', args: [], env: {} },
    state: 'pending',
    decision: null,
    reason: null,
    requested_at: at(0),
    expires_at: at(60_000),
    resolved_at: null,
    ...overrides,
  };
}

export function newEvent(run: RunRecord, overrides: Partial<NewEvent> = {}): NewEvent {
  return {
    session_id: run.session_id,
    run_id: run.id,
    provider: run.provider,
    kind: 'assistant_delta',
    payload: { content: 'x', index: 0 },
    metadata: METADATA,
    ...overrides,
  };
}

const ids = <T extends { id: string }>(records: T[]) => records.map((r) => r.id).sort();
const seqs = (events: AsmEvent[]) => events.map((e) => e.seq);
/** The events of EventLog.readJson's answer, parsed. */
const jsonEvents = (page: EventsJson): AsmEvent[] => JSON.parse(`[${typeof page.json === 'string' ? page.json : Buffer.concat(page.json).toString()}]`);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function rejectsWithKind(promise: Promise<unknown>, kind: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AsmError);
  expect((err as AsmError).kind).toBe(kind);
}

export function storeContract(name: string, deploy: DeploymentFactory): void {
  describe(`Store contract: ${name}`, () => {
    const opened: Store[] = [];

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((store) => store.close()));
    });

    /** One deployment and n stores on it (n processes). */
    async function stores(n: number, eventsPerSession = 1000): Promise<Store[]> {
      const deployment = deploy({ eventsPerSession });
      const list: Store[] = [];
      for (let i = 0; i < n; i++) list.push(await deployment.open());
      opened.push(...list);
      return list;
    }

    async function single(eventsPerSession?: number): Promise<Store> {
      return (await stores(1, eventsPerSession))[0];
    }

    describe('sessions', () => {
      it('round-trips a record exactly, empty arrays and objects and awkward text included', async () => {
        const store = await single();
        // The Redis store sends a record's fields joined by newlines and reads them back as one JSON text (redis-schema.ts).
        const awkward = ['ß"\n', '', '\\n', '","x":"', '\u2028\u0000\t', '\r\n\\', '😀', '{"a":1}'];
        const session = sessionRecord({ metadata: { nested: { list: [], obj: {} }, n: 1.5, text: 'ß"\n', awkward }, driver_opts: { a: [1, { b: null }] }, cwd: 'line one\nline two' });
        await store.sessions.create(session);
        expect(await store.sessions.get(session.id)).toEqual(session);
        expect(await store.sessions.get('ses_missing')).toBeUndefined();
      });

      it('lists the sessions of one tenant in creation order and counts all', async () => {
        const store = await single();
        const a = sessionRecord({ tenant: 't1', created_at: at(1) });
        const b = sessionRecord({ tenant: 't2', created_at: at(2) });
        const c = sessionRecord({ tenant: 't1', created_at: at(3) });
        for (const s of [a, b, c]) await store.sessions.create(s);
        expect((await store.sessions.page('t1', { limit: 100 })).items.map((s) => s.id)).toEqual([a.id, c.id]);
        expect(await store.sessions.page('t3', { limit: 100 })).toEqual({ items: [], next: null });
        expect(await store.sessions.count()).toBe(3);
      });

      it('stores a session only below the limit, creates at once from two processes included, and a second create of one id counts once', async () => {
        const [one, two] = await stores(2);
        const first = sessionRecord({ tenant: 'capped', created_at: at(1) });
        expect(await one.sessions.create(first, 4)).toBe(true);
        // Twelve creates at once, half through each process, for the three places left.
        const racing = Array.from({ length: 12 }, (_, i) => sessionRecord({ tenant: 'capped', created_at: at(2 + i) }));
        const stored = await Promise.all(racing.map((s, i) => (i % 2 ? two : one).sessions.create(s, 4)));
        expect(stored.filter(Boolean)).toHaveLength(3);
        expect(await one.sessions.count()).toBe(4);
        const kept = racing.filter((_, i) => stored[i]);
        expect((await two.sessions.page('capped', { limit: 100 })).items.map((s) => s.id)).toEqual([first, ...kept].map((s) => s.id));
        for (const [i, s] of racing.entries()) if (!stored[i]) expect(await one.sessions.get(s.id)).toBeUndefined();
        // At the limit, the same session again (a retried create) is not refused and not counted twice.
        expect(await two.sessions.create(first, 4)).toBe(true);
        expect(await two.sessions.count()).toBe(4);
        // Without a limit there is none.
        expect(await two.sessions.create(sessionRecord({ tenant: 'capped', created_at: at(20) }))).toBe(true);
        expect(await one.sessions.count()).toBe(5);
      });

      it("pages a tenant's sessions by cursor: each once, in order, ties on the same millisecond by id", async () => {
        const store = await single();
        // Seven sessions, three of them created in the same millisecond.
        const created = [1, 2, 2, 2, 3, 4, 5].map((t, i) => sessionRecord({ tenant: 'paged', id: `ses_${String.fromCharCode(103 - i)}${i}`, created_at: at(t) }));
        for (const s of created) await store.sessions.create(s);
        await store.sessions.create(sessionRecord({ tenant: 'other', created_at: at(2) }));
        const expected = [...created].sort((x, y) => x.created_at.localeCompare(y.created_at) || x.id.localeCompare(y.id)).map((s) => s.id);
        const seen: string[] = [];
        let cursor: string | undefined;
        for (let pages = 0; pages < 10; pages++) {
          const page = await store.sessions.page('paged', { limit: 2, cursor });
          expect(page.items.length).toBeLessThanOrEqual(2);
          seen.push(...page.items.map((x) => x.id));
          if (page.next === null) break;
          cursor = page.next;
        }
        expect(seen).toEqual(expected);
        // A page ending on the last item has no next.
        expect((await store.sessions.page('paged', { limit: 7 })).next).toBeNull();
        await expect(store.sessions.page('paged', { limit: 2, cursor: 'not-a-cursor' })).rejects.toMatchObject({ kind: 'bad_request', details: { field: 'query.cursor' } });
      });

      it("pages a session's runs by cursor, in creation order", async () => {
        const store = await single();
        const session = sessionRecord();
        await store.sessions.create(session);
        const runs = range(1, 5).map((i) => runRecord(session, { created_at: at(i) }));
        for (const run of runs) await store.runs.create(run);
        const first = await store.runs.pageBySession(session.id, { limit: 3 });
        expect(first.items.map((r) => r.id)).toEqual(runs.slice(0, 3).map((r) => r.id));
        const second = await store.runs.pageBySession(session.id, { limit: 3, cursor: first.next! });
        expect(second).toEqual({ items: runs.slice(3), next: null });
        expect(await store.runs.pageBySession('ses_missing', { limit: 3 })).toEqual({ items: [], next: null });
      });

      it('merges an update into the record and answers the merged record', async () => {
        const store = await single();
        const session = sessionRecord();
        await store.sessions.create(session);
        const updated = await store.sessions.update(session.id, { state: 'closing', allowed_tools: ['Bash', 'a\nb', '"\\'], metadata: {} });
        const expected = { ...session, state: 'closing', allowed_tools: ['Bash', 'a\nb', '"\\'], metadata: {} };
        expect(updated).toEqual(expected);
        expect(await store.sessions.get(session.id)).toEqual(expected);
        await rejectsWithKind(store.sessions.update('ses_missing', { state: 'closed' }), 'not_found');
        expect(await store.sessions.get('ses_missing')).toBeUndefined();
      });

      it('loses no update when two processes update different fields at once', async () => {
        const [a, b] = await stores(2);
        const session = sessionRecord();
        await a.sessions.create(session);
        const rounds = range(0, 24);
        await Promise.all([
          ...rounds.map((i) => a.sessions.update(session.id, { model: `m${i}`, cwd: `/w/${i}` })),
          ...rounds.map((i) => b.sessions.update(session.id, { permission_mode: `p${i}`, metadata: { i } })),
        ]);
        expect(await b.sessions.get(session.id)).toEqual({ ...session, model: 'm24', cwd: '/w/24', permission_mode: 'p24', metadata: { i: 24 } });
      });
    });

    describe('runs', () => {
      it('round-trips a run with its owner fields and lists a session’s runs in creation order', async () => {
        const store = await single();
        const session = sessionRecord();
        const other = sessionRecord();
        await store.sessions.create(session);
        const runs = range(1, 5).map((i) => runRecord(session, { created_at: at(i) }));
        for (const run of runs) await store.runs.create(run);
        await store.runs.create(runRecord(other));
        expect(await store.runs.get(runs[0].id)).toEqual(runs[0]);
        expect(await store.runs.get('run_missing')).toBeUndefined();
        expect(await store.runs.listBySession(session.id)).toEqual(runs);
        expect(await store.runs.listBySession('ses_missing')).toEqual([]);
      });

      it('updates atomically across processes; an unknown run is not_found', async () => {
        const [a, b] = await stores(2);
        const session = sessionRecord();
        const run = runRecord(session);
        await a.runs.create(run);
        await Promise.all([
          ...range(0, 19).map((i) => a.runs.update(run.id, { owner: `node-${i}` })),
          ...range(0, 19).map((i) => b.runs.update(run.id, { interrupt_requested: i % 2 === 1, dispatched: true })),
        ]);
        expect(await a.runs.get(run.id)).toEqual({ ...run, owner: 'node-19', interrupt_requested: true, dispatched: true });
        await rejectsWithKind(a.runs.update('run_missing', { owner: 'x' }), 'not_found');
      });

      it('lists unfinished runs across sessions until they end', async () => {
        const store = await single();
        const s1 = sessionRecord();
        const s2 = sessionRecord();
        const queued = runRecord(s1, { created_at: at(1) });
        const running = runRecord(s2, { state: 'running', created_at: at(2) });
        const done = runRecord(s1, { state: 'completed' });
        for (const run of [queued, running, done]) await store.runs.create(run);
        expect(ids(await store.runs.listUnfinished())).toEqual(ids([queued, running]));
        await store.runs.update(queued.id, { state: 'running', owner: 'node-a' });
        await store.runs.update(running.id, { state: 'failed' });
        expect(await store.runs.listUnfinished()).toEqual([{ ...queued, state: 'running', owner: 'node-a' }]);
        await store.runs.update(queued.id, { state: 'interrupted' });
        expect(await store.runs.listUnfinished()).toEqual([]);
      });
      it('lists the unfinished runs a process owns, as they are taken, released and ended', async () => {
        const [a, b] = await stores(2);
        const session = sessionRecord();
        const [waiting, taken, released, ended] = range(1, 4).map((i) => runRecord(session, { created_at: at(i) }));
        const createdOwned = runRecord(session, { state: 'running', owner: 'node-c', created_at: at(5) });
        for (const run of [waiting, taken, released, ended, createdOwned]) await a.runs.create(run);
        expect(await b.runs.listOwnedUnfinished()).toEqual([createdOwned]);
        await a.runs.update(taken.id, { owner: 'node-a' });
        await a.runs.update(released.id, { owner: 'node-b', state: 'running' });
        await a.runs.update(ended.id, { owner: 'node-b', state: 'running' });
        expect(ids(await b.runs.listOwnedUnfinished()).sort()).toEqual(ids([taken, released, ended, createdOwned]).sort());
        await b.runs.update(released.id, { owner: null, state: 'queued' });
        await b.runs.update(ended.id, { state: 'completed' });
        await b.runs.update(createdOwned.id, { state: 'interrupted' });
        expect(await a.runs.listOwnedUnfinished()).toEqual([{ ...taken, owner: 'node-a' }]);
        // The waiting run was never owned; every unfinished one is still listed by listUnfinished.
        expect(ids(await a.runs.listUnfinished())).toEqual(ids([waiting, taken, released]));
      });
      it('claims a run in its read only where it is queued, unowned and local; of two processes claiming at once, one takes it', async () => {
        const [a, b] = await stores(2);
        const session = sessionRecord();
        const remote = { remote_node: 'pool:gpu', remote_cookie: null, remote_connect_timeout_ms: 1000, remote_rpc_timeout_ms: 1000, remote_boot_lease_timeout_ms: 1000, remote_bootstrap_mode: 'ensure_started' } as RemoteOptions;
        const free = runRecord(session, { interrupt_requested: true });
        const contested = runRecord(session);
        const owned = runRecord(session, { owner: 'node-b' });
        const running = runRecord(session, { state: 'running' });
        const ended = runRecord(session, { state: 'completed' });
        const remoteRun = runRecord(session, { options: { ...runRecord(session).options, remote } });
        for (const run of [free, contested, owned, running, ended, remoteRun]) await a.runs.create(run);

        // Taken, and answered as taken, the interrupt flag with it.
        expect(await b.runs.claimLocal(free.id, 'node-a')).toEqual({ run: { ...free, owner: 'node-a' }, claimed: true });
        expect(await a.runs.get(free.id)).toEqual({ ...free, owner: 'node-a' });
        // Not taken again, by another process or the same one.
        for (const owner of ['node-b', 'node-a']) expect(await a.runs.claimLocal(free.id, owner)).toEqual({ run: { ...free, owner: 'node-a' }, claimed: false });
        for (const run of [owned, running, ended, remoteRun]) {
          expect(await b.runs.claimLocal(run.id, 'node-a')).toEqual({ run, claimed: false });
          expect(await a.runs.get(run.id)).toEqual(run);
        }
        expect(await a.runs.claimLocal('run_missing', 'node-a')).toBeUndefined();

        const claims = await Promise.all([a.runs.claimLocal(contested.id, 'node-a'), b.runs.claimLocal(contested.id, 'node-b')]);
        expect(claims.filter((claim) => claim!.claimed)).toHaveLength(1);
        const winner = claims.find((claim) => claim!.claimed)!.run.owner;
        expect((await a.runs.get(contested.id))!.owner).toBe(winner);
        // The owned index names the claimed runs (and the ones created owned or running with an owner), nothing the claims did not take.
        expect(ids(await b.runs.listOwnedUnfinished()).sort()).toEqual(ids([free, contested, owned]).sort());
      });
      it("indexes a session's runs by admission slot: counts, the oldest waiting, the unfinished, as runs move", async () => {
        const [a, b] = await stores(2);
        const session = sessionRecord();
        const [first, second, third] = range(1, 3).map((i) => runRecord(session, { created_at: at(i) }));
        await a.sessions.create(session);
        for (const run of [first, second, third]) await a.runs.create(run);
        await a.runs.create(runRecord(sessionRecord()));
        const counts = async (store: Store) => (await store.admissionView(session.id))?.counts;
        expect(await counts(b)).toEqual({ inFlight: 0, waiting: 3 });
        expect((await b.runs.oldestWaiting(session.id))?.id).toBe(first.id);

        await a.runs.update(first.id, { dispatched: true });
        await b.runs.update(second.id, { state: 'interrupted' });
        expect(await counts(a)).toEqual({ inFlight: 1, waiting: 1 });
        expect((await a.runs.oldestWaiting(session.id))?.id).toBe(third.id);
        expect(ids(await b.runs.listUnfinishedBySession(session.id))).toEqual(ids([first, third]));
        expect(await b.runs.recountInFlight(session.id)).toEqual({ inFlight: 1, waiting: 1 });

        await a.runs.update(first.id, { state: 'running' });
        await a.runs.update(first.id, { state: 'completed' });
        await b.runs.update(third.id, { dispatched: true, state: 'running' });
        expect(await counts(a)).toEqual({ inFlight: 1, waiting: 0 });
        expect(await a.runs.oldestWaiting(session.id)).toBeUndefined();
        expect(ids(await a.runs.listUnfinishedBySession(session.id))).toEqual([third.id]);
      });
      it('keeps the admission slots right whichever process updates a run, a dispatch recorded after the run ended included', async () => {
        const [a, b] = await stores(2);
        const session = sessionRecord();
        const [ended, started] = range(1, 2).map((i) => runRecord(session, { created_at: at(i) }));
        await a.sessions.create(session);
        for (const run of [ended, started]) await a.runs.create(run);
        const counts = async (store: Store) => (await store.admissionView(session.id))?.counts;
        // b has not seen these runs; a created them, and a dispatch alone would put a run in flight.
        await b.runs.update(ended.id, { state: 'interrupted' });
        await a.runs.update(ended.id, { dispatched: true });
        expect(await counts(b)).toEqual({ inFlight: 0, waiting: 1 });
        await b.runs.update(started.id, { dispatched: true });
        expect(await counts(a)).toEqual({ inFlight: 1, waiting: 0 });
        expect(await a.runs.recountInFlight(session.id)).toEqual({ inFlight: 1, waiting: 0 });
        expect(ids(await b.runs.listUnfinishedBySession(session.id))).toEqual([started.id]);
      });
      it("reads a session for admission as one view, from any process: the record as updated, its counts and its last seq; nothing for a missing session", async () => {
        const [a, b] = await stores(2);
        const session = sessionRecord();
        await a.sessions.create(session);
        expect(await b.admissionView(session.id)).toEqual({ session, counts: { inFlight: 0, waiting: 0 }, lastSeq: 0 });
        const [running, waiting] = range(1, 2).map((i) => runRecord(session, { created_at: at(i) }));
        await a.runs.create({ ...running, dispatched: true });
        await a.runs.create(waiting);
        for (let i = 0; i < 3; i++) await a.events.append(newEvent(running));
        await a.sessions.update(session.id, { metadata: { line: 'a\nb "quoted" \u2028' } });
        const view = await b.admissionView(session.id);
        expect(view).toEqual({ session: { ...session, metadata: { line: 'a\nb "quoted" \u2028' }, last_seq: 3 }, counts: { inFlight: 1, waiting: 1 }, lastSeq: 3 });
        expect(await a.admissionView('ses_missing')).toBeUndefined();
      });
    });

    describe('approvals', () => {
      it('lists pending approvals by run, by session and overall', async () => {
        const store = await single();
        const session = sessionRecord();
        const run1 = runRecord(session);
        const run2 = runRecord(session);
        const elsewhere = runRecord(sessionRecord());
        const a1 = approvalRecord(run1);
        const a2 = approvalRecord(run2);
        const a3 = approvalRecord(elsewhere);
        const decided = approvalRecord(run1, { state: 'resolved', decision: 'allow', reason: null, resolved_at: at(5) });
        for (const a of [a1, a2, a3, decided]) await store.approvals.create(a);
        expect(await store.approvals.get(a1.id)).toEqual(a1);
        expect(await store.approvals.get(decided.id)).toEqual(decided);
        expect(await store.approvals.get('apr_missing')).toBeUndefined();
        expect(ids(await store.approvals.listPending({ runId: run1.id }))).toEqual([a1.id]);
        expect(ids(await store.approvals.listPending({ sessionId: session.id }))).toEqual(ids([a1, a2]));
        expect(ids(await store.approvals.listPending({ sessionId: session.id, runId: run2.id }))).toEqual([a2.id]);
        expect(await store.approvals.listPending({ sessionId: elsewhere.session_id, runId: run1.id })).toEqual([]);
        expect(ids(await store.approvals.listPending({}))).toEqual(ids([a1, a2, a3]));
      });

      it('resolves once; a second decision sees already_resolved, an unknown id not_found', async () => {
        const store = await single();
        const run = runRecord(sessionRecord());
        const approval = approvalRecord(run, { expires_at: at(0) });
        await store.approvals.create(structuredClone(approval));
        const first = await store.approvals.resolve(approval.id, 'allow_for_session', 'fine');
        expect(first.outcome).toBe('resolved');
        const resolved = { ...approval, state: 'resolved', decision: 'allow_for_session', reason: 'fine', resolved_at: expect.any(String) };
        expect(first.outcome === 'resolved' && first.approval).toMatchObject(resolved);
        const second = await store.approvals.resolve(approval.id, 'deny', 'late');
        expect(second).toEqual({ outcome: 'already_resolved', approval: expect.objectContaining(resolved) });
        expect(await store.approvals.get(approval.id)).toMatchObject(resolved);
        expect(await store.approvals.resolve('apr_missing', 'deny', null)).toEqual({ outcome: 'not_found' });
        expect(await store.approvals.listPending({ runId: run.id })).toEqual([]);
        expect(await store.approvals.listExpired(Date.parse(at(1)), 10)).toEqual([]);
      });

      it('resolves exactly once when two processes decide at once', async () => {
        const [a, b] = await stores(2);
        const approval = approvalRecord(runRecord(sessionRecord()));
        await a.approvals.create(approval);
        const outcomes = await Promise.all(range(0, 19).map((i) => (i % 2 ? a : b).approvals.resolve(approval.id, i % 3 ? 'allow' : 'deny', `r${i}`)));
        const winners = outcomes.filter((o) => o.outcome === 'resolved');
        expect(winners).toHaveLength(1);
        const winner = winners[0].outcome === 'resolved' ? winners[0].approval : undefined;
        for (const o of outcomes) if (o.outcome === 'already_resolved') expect(o.approval.reason).toBe(winner?.reason);
        expect(await b.approvals.get(approval.id)).toEqual(winner);
      });

      it('lists expired pending approvals earliest deadline first, at most limit', async () => {
        const store = await single();
        const run = runRecord(sessionRecord());
        const late = approvalRecord(run, { expires_at: at(3_000) });
        const early = approvalRecord(run, { expires_at: at(1_000) });
        const middle = approvalRecord(run, { expires_at: at(2_000) });
        const future = approvalRecord(run, { expires_at: at(9_000) });
        const resolvedEarly = approvalRecord(run, { expires_at: at(500) });
        for (const a of [late, early, middle, future, resolvedEarly]) await store.approvals.create(a);
        await store.approvals.resolve(resolvedEarly.id, 'deny', 'timeout');
        const now = Date.parse(at(3_000));
        expect((await store.approvals.listExpired(now, 10)).map((a) => a.id)).toEqual([early.id, middle.id, late.id]);
        expect((await store.approvals.listExpired(now, 2)).map((a) => a.id)).toEqual([early.id, middle.id]);
        expect(await store.approvals.listExpired(Date.parse(at(999)), 10)).toEqual([]);
      });
    });

    describe('events', () => {
      it('stamps seq, id and timestamp and keeps a given timestamp', async () => {
        const store = await single();
        const session = sessionRecord();
        await store.sessions.create(session);
        const run = runRecord(session);
        const first = await store.events.append(newEvent(run));
        const second = await store.events.append(newEvent(run, { kind: 'result', payload: { status: 'ok', list: [], map: {} }, timestamp: at(7) }));
        expect(first).toMatchObject({ ...newEvent(run), seq: 1 });
        expect(first.id).toMatch(/^evt_/);
        expect(Date.parse(first.timestamp)).not.toBeNaN();
        expect(second).toMatchObject({ seq: 2, timestamp: at(7), payload: { status: 'ok', list: [], map: {} } });
        expect(second.id).not.toBe(first.id);
        expect(await store.events.read(session.id, { after: 0, limit: 10 })).toEqual([first, second]);
        expect(await store.events.lastSeq(session.id)).toBe(2);
        expect(await store.events.lastSeq('ses_missing')).toBe(0);
        expect(await store.events.read('ses_missing', { after: 0, limit: 10 })).toEqual([]);
      });

      it('reads after a cursor, up to a limit, filtered by run across many pages', async () => {
        const store = await single(5000);
        const session = sessionRecord();
        const [r1, r2] = [runRecord(session), runRecord(session)];
        // r1 is sparse: one event in fifty, so its reads must page through the others.
        const appended = await Promise.all(range(1, 1500).map((i) => store.events.append(newEvent(i % 50 === 0 ? r1 : r2))));
        expect(seqs(appended)).toEqual(range(1, 1500));
        expect(seqs(await store.events.read(session.id, { after: 10, limit: 5 }))).toEqual(range(11, 15));
        expect(seqs(await store.events.read(session.id, { after: 1498, limit: 5 }))).toEqual([1499, 1500]);
        expect(seqs(await store.events.read(session.id, { after: 0, runId: r1.id, limit: 100 }))).toEqual(range(1, 30).map((i) => i * 50));
        expect(seqs(await store.events.read(session.id, { after: 100, runId: r1.id, limit: 3 }))).toEqual([150, 200, 250]);
        expect(await store.events.read(session.id, { after: 1500, runId: r1.id, limit: 3 })).toEqual([]);
        expect(await store.events.read(session.id, { after: 0, limit: Number.MAX_SAFE_INTEGER })).toHaveLength(1500);
      });

      it('reads the same events as their JSON, with the last one\'s seq, filtered by run across many pages', async () => {
        const store = await single(5000);
        const session = sessionRecord();
        const [r1, r2] = [runRecord(session), runRecord(session)];
        const payload = { content: 'quote " backslash \\ newline \n unicode é \u2028', nested: { list: [1, null, true] } };
        for (let i = 1; i <= 1200; i++) await store.events.append(newEvent(i % 40 === 0 ? r1 : r2, i % 40 === 0 ? { payload } : {}));
        for (const opts of [{ after: 0, runId: r1.id, limit: 100 }, { after: 400, runId: r1.id, limit: 4 }, { after: 10, limit: 5 }, { after: 1200, runId: r1.id, limit: 3 }]) {
          const events = await store.events.read(session.id, opts);
          const page = await store.events.readJson(session.id, opts);
          expect(jsonEvents(page)).toEqual(events);
          expect(page.lastSeq).toBe(events.length > 0 ? events[events.length - 1].seq : null);
        }
        expect(seqs(jsonEvents(await store.events.readJson(session.id, { after: 0, runId: r1.id, limit: 100 })))).toEqual(range(1, 30).map((i) => i * 40));
        const missing = await store.events.readJson('ses_missing', { after: 0, limit: 10 });
        expect([jsonEvents(missing), missing.lastSeq]).toEqual([[], null]);
      });

      it('reads a page as its events\' JSON again, and after the log was appended to and trimmed', async () => {
        const store = await single(16);
        const run = runRecord(sessionRecord());
        const append = async (from: number, to: number) => {
          for (const i of range(from, to)) await store.events.append(newEvent(run, { payload: { content: `line ${i}` } }));
        };
        const expectPage = async (after: number) => {
          const page = await store.events.readJson(run.session_id, { after, limit: 4 });
          expect(jsonEvents(page)).toEqual(await store.events.read(run.session_id, { after, limit: 4 }));
          return seqs(jsonEvents(page));
        };
        await append(1, 12);
        expect(await expectPage(6)).toEqual([7, 8, 9, 10]);
        expect(await expectPage(6)).toEqual([7, 8, 9, 10]);
        // Trimmed at least once: the events kept move to the front of the log, and later pages are read.
        await append(13, 60);
        const kept = seqs(await store.events.read(run.session_id, { after: 0, limit: 100 }));
        expect(kept[0]).toBeGreaterThan(12);
        for (const after of [kept[0] - 1, 50, 56, kept[0] + 1]) expect(await expectPage(after)).toEqual(range(after + 1, Math.min(after + 4, 60)));
      });

      it('trims each session to eventsPerSession, keeping the newest and the seq counter', async () => {
        const store = await single(10);
        const run = runRecord(sessionRecord());
        for (const _ of range(1, 40)) await store.events.append(newEvent(run));
        const kept = seqs(await store.events.read(run.session_id, { after: 0, limit: 100 }));
        expect(kept.length).toBeGreaterThanOrEqual(10);
        expect(kept.length).toBeLessThan(40);
        expect(kept).toEqual(range(kept[0], 40));
        expect(seqs(await store.events.read(run.session_id, { after: 36, limit: 100 }))).toEqual([37, 38, 39, 40]);
        expect(await store.events.lastSeq(run.session_id)).toBe(40);
        expect((await store.events.append(newEvent(run))).seq).toBe(41);
      });

      it('assigns gap-free seqs when two processes append to one session at once', async () => {
        const [a, b] = await stores(2);
        const run = runRecord(sessionRecord());
        const appended = await Promise.all(range(1, 200).map((i) => (i % 2 ? a : b).events.append(newEvent(run, { payload: { content: `${i}`, index: i } }))));
        expect(seqs(appended).sort((x, y) => x - y)).toEqual(range(1, 200));
        const stored = await b.events.read(run.session_id, { after: 0, limit: 1000 });
        expect(stored).toEqual([...appended].sort((x, y) => x.seq - y.seq));
      });

      it('delivers live events of a session in seq order, from any process, until unsubscribed', async () => {
        const [a, b] = await stores(2);
        const run = runRecord(sessionRecord());
        const other = runRecord(sessionRecord());
        const seen: AsmEvent[] = [];
        const unsubscribe = a.events.subscribe(run.session_id, (event) => seen.push(event));
        // The first call after subscribing marks the point from which nothing may be missed.
        await a.events.lastSeq(run.session_id);
        await Promise.all(range(1, 60).map((i) => (i % 2 ? a : b).events.append(newEvent(run))));
        await b.events.append(newEvent(other));
        await waitFor(() => seen.length >= 60, '60 live events');
        expect(seqs(seen)).toEqual(range(1, 60));
        expect(seen.every((e) => e.session_id === run.session_id)).toBe(true);
        unsubscribe();
        await b.events.append(newEvent(run));
        const marker = runRecord(sessionRecord());
        const markers: AsmEvent[] = [];
        const stopMarker = a.events.subscribe(marker.session_id, (event) => markers.push(event));
        await a.events.lastSeq(marker.session_id);
        await b.events.append(newEvent(marker));
        await waitFor(() => markers.length === 1, 'the marker event');
        stopMarker();
        expect(seen).toHaveLength(60);
      });

      it('misses nothing between a read issued right after subscribing and the listener, an append issued just before included', async () => {
        const [a] = await stores(1);
        const run = runRecord(sessionRecord());
        await a.events.append(newEvent(run));
        const seen: number[] = [];
        // Issued, not yet answered: it lands before the subscription's starting point or after it, and
        // either way the read or the listener must have it (what followEvents and a resumed stream rely on).
        const appending = a.events.append(newEvent(run));
        const unsubscribe = a.events.subscribe(run.session_id, (event) => seen.push(event.seq));
        const replayed = seqs(await a.events.read(run.session_id, { after: 1, limit: 10 }));
        await appending;
        // A later event reaching the listener shows the subscription is live and delivered all it would.
        await a.events.append(newEvent(run));
        await waitFor(() => seen.includes(3), 'the third event, live');
        unsubscribe();
        expect([...new Set([...replayed, ...seen])].sort((x, y) => x - y)).toEqual([2, 3]);
      });

      it('delivers every session to an all-sessions listener, each session in seq order', async () => {
        const [a, b] = await stores(2);
        const runs = [runRecord(sessionRecord()), runRecord(sessionRecord())];
        const seen: AsmEvent[] = [];
        const unsubscribe = b.events.subscribe(null, (event) => seen.push(event));
        // Live-only: wait until the subscription carries events before counting.
        const probe = runRecord(sessionRecord());
        await waitFor(async () => {
          await a.events.append(newEvent(probe));
          await new Promise((resolve) => setTimeout(resolve, 20));
          return seen.length > 0;
        }, 'the all-sessions subscription to carry events');
        const ours = () => seen.filter((e) => e.session_id !== probe.session_id);
        await Promise.all(range(1, 40).map((i) => (i % 2 ? a : b).events.append(newEvent(runs[i % 2]))));
        await waitFor(() => ours().length >= 40, '40 live events');
        for (const run of runs) expect(seqs(seen.filter((e) => e.session_id === run.session_id))).toEqual(range(1, 20));
        unsubscribe();
        await a.events.append(newEvent(runs[0]));
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(ours()).toHaveLength(40);
      });
    });

    describe('holdings', () => {
      it('holds up to the limit per tenant and kind; release frees one, add ignores the limit', async () => {
        const store = await single();
        const { holdings } = store;
        expect(await holdings.take('a', 'sessions', 's1', 2)).toBe(true);
        expect(await holdings.take('a', 'sessions', 's2', 2)).toBe(true);
        expect(await holdings.take('a', 'sessions', 's3', 2)).toBe(false);
        // Held already: still held, and not counted twice.
        expect(await holdings.take('a', 'sessions', 's2', 2)).toBe(true);
        expect(await holdings.take('b', 'sessions', 's3', 2)).toBe(true);
        expect(await holdings.take('a', 'connections', 'c1', 2)).toBe(true);
        await holdings.release('a', 'sessions', 's1');
        expect(await holdings.take('a', 'sessions', 's3', 2)).toBe(true);
        await holdings.add('a', 'sessions', 's4');
        expect(await holdings.take('a', 'sessions', 's5', 3)).toBe(false);
        expect((await holdings.takenBefore('a', 'sessions', Date.now() + 1)).sort()).toEqual(['s2', 's3', 's4']);
        expect(await holdings.takenBefore('a', 'sessions', Date.now() - 60_000)).toEqual([]);
      });

      it('never holds more than the limit when two processes take at once', async () => {
        const [one, two] = await stores(2);
        const taken = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? one : two).holdings.take('a', 'active_runs', `run_${i}`, 3)));
        expect(taken.filter(Boolean)).toHaveLength(3);
        expect(await one.holdings.takenBefore('a', 'active_runs', Date.now() + 1)).toHaveLength(3);
      });
    });

    describe('eviction', () => {
      it('evicts the longest-closed session with its runs, approvals and events', async () => {
        const [store, peer] = await stores(2);
        expect(await store.evictOldestClosed()).toBeUndefined();
        const closedLater = sessionRecord({ created_at: at(1) });
        const closedFirst = sessionRecord({ created_at: at(2) });
        const open = sessionRecord({ created_at: at(3) });
        for (const s of [closedLater, closedFirst, open]) await store.sessions.create(s);
        const runs = new Map<string, RunRecord>();
        for (const s of [closedLater, closedFirst, open]) {
          const run = runRecord(s, { state: 'running' });
          runs.set(s.id, run);
          await store.runs.create(run);
          await store.approvals.create(approvalRecord(run, { expires_at: at(0) }));
          await store.approvals.create(approvalRecord(run, { state: 'resolved', decision: 'deny', resolved_at: at(0) }));
          await store.events.append(newEvent(run));
        }
        await store.sessions.update(closedLater.id, { state: 'closed', closed_at: at(200) });
        await store.sessions.update(closedFirst.id, { state: 'closed', closed_at: at(100) });
        expect(await store.sessions.count()).toBe(3);

        expect(await peer.evictOldestClosed()).toBe(closedFirst.id);
        const gone = closedFirst.id;
        const goneRun = runs.get(gone)!;
        expect(await store.sessions.get(gone)).toBeUndefined();
        expect(await store.sessions.count()).toBe(2);
        expect((await store.sessions.page('default', { limit: 100 })).items.map((s) => s.id)).toEqual([closedLater.id, open.id]);
        expect(await store.runs.get(goneRun.id)).toBeUndefined();
        expect(await store.runs.listBySession(gone)).toEqual([]);
        expect((await store.runs.listUnfinished()).map((r) => r.session_id).sort()).toEqual([closedLater.id, open.id].sort());
        expect(await store.approvals.listPending({ sessionId: gone })).toEqual([]);
        expect((await store.approvals.listPending({})).map((a) => a.session_id).sort()).toEqual([closedLater.id, open.id].sort());
        expect((await store.approvals.listExpired(Date.parse(at(1)), 10)).map((a) => a.session_id).sort()).toEqual([closedLater.id, open.id].sort());
        expect(await store.events.read(gone, { after: 0, limit: 10 })).toEqual([]);
        expect(await store.events.lastSeq(gone)).toBe(0);

        expect(await store.evictOldestClosed()).toBe(closedLater.id);
        expect(await store.evictOldestClosed()).toBeUndefined();
        expect((await store.sessions.page('default', { limit: 100 })).items.map((s) => s.id)).toEqual([open.id]);
      });

      it('evicts a session created closed, and one created open only once it is closed', async () => {
        const store = await single();
        const open = sessionRecord({ created_at: at(1) });
        const createdClosed = sessionRecord({ created_at: at(2), state: 'closed', closed_at: at(50) });
        for (const s of [open, createdClosed]) await store.sessions.create(s);
        expect(await store.evictOldestClosed()).toBe(createdClosed.id);
        expect(await store.evictOldestClosed()).toBeUndefined();
        await store.sessions.update(open.id, { state: 'closed', closed_at: at(60) });
        expect(await store.evictOldestClosed()).toBe(open.id);
      });
    });

    it('answers ping', async () => {
      const store = await single();
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}
