/**
 * Admission: a session runs at most max_concurrent_runs at once and queues at most max_queued_runs
 * more in its own FIFO, refusing beyond that with 429 at_capacity; a run that ends hands its slot to
 * the oldest waiting run. Runs are parked by pausing their lane, or run to the end by the fake claude.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { DestinationStream } from 'pino';
import { AsmError, cancelledRun } from '../../src/errors/kinds.js';
import { createLogger } from '../../src/logger.js';
import type { AsmEvent } from '../../src/schemas/events.js';
import type { RunRecord } from '../../src/store/types.js';
import { waitFor } from '../helpers/wait.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { withSessionLock } from '../../src/sessions/session-lock.js';
import { runRecord } from '../store/contract.js';
import { isTerminalEvent, makeRig, refusal, TENANT, withOutage, type Rig } from './rig.js';

let rig: Rig;
afterEach(() => rig?.close());

async function queuedEvent(sessionId: string, runId: string): Promise<AsmEvent> {
  return (await rig.events(sessionId, runId)).find((e) => e.kind === 'run_queued')!;
}

async function dispatched(runId: string): Promise<boolean> {
  return (await rig.store.runs.get(runId))!.dispatched;
}

/** A session of a new rig that runs one run at a time and queues up to five, its lane paused (runs are admitted, none starts). */
async function oneSlotSession() {
  rig = await makeRig();
  const session = await rig.session({ max_concurrent_runs: 1, max_queued_runs: 5 });
  await rig.engine.pause(session.queue);
  return session;
}

describe('Admission', () => {
  it('dispatches up to max_concurrent_runs, queues up to max_queued_runs, and refuses more with 429 at_capacity', async () => {
    rig = await makeRig();
    const session = await rig.session({ max_concurrent_runs: 2, max_queued_runs: 1 });
    await rig.engine.pause(session.queue);
    const runs: RunRecord[] = [];
    for (const prompt of ['a', 'b', 'c']) runs.push(await rig.submit(session.id, prompt));
    expect(await Promise.all(runs.map((r) => dispatched(r.id)))).toEqual([true, true, false]);
    expect(await Promise.all(runs.map(async (r) => (await queuedEvent(session.id, r.id)).payload))).toEqual([
      { queue: session.queue, position: 0 },
      { queue: session.queue, position: 0 },
      { queue: session.queue, position: 1 },
    ]);

    const err = await refusal(rig.submit(session.id, 'd'));
    expect(err).toMatchObject({ kind: 'at_capacity', details: { running: 2, queued: 1 } });
    expect(err.httpStatus).toBe(429);
    expect(await rig.store.runs.listBySession(session.id)).toHaveLength(3);
    expect((await rig.engine.metrics()).find((m) => m.id === session.queue)!.pending).toBe(2);
  });

  it("records on each run its session's last seq at its creation, before every event of the run (where a read of its events starts)", async () => {
    const session = await oneSlotSession();
    const first = await rig.submit(session.id, 'a');
    const before = await rig.store.events.lastSeq(session.id);
    expect(before).toBeGreaterThan(0);
    const second = await rig.submit(session.id, 'b');
    expect(first.events_after).toBe(0);
    expect((await rig.store.runs.get(second.id))!.events_after).toBe(before);
    const log = await rig.store.events.read(session.id, { after: 0, limit: 1000 });
    expect(log.filter((e) => e.run_id === second.id).map((e) => e.seq)).toEqual([before + 1]);
    expect(log.filter((e) => e.run_id === first.id).every((e) => e.seq <= before)).toBe(true);
  });

  it('with max_queued_runs 0 refuses a run as soon as the running slots are taken', async () => {
    rig = await makeRig();
    const session = await rig.session({ max_concurrent_runs: 1, max_queued_runs: 0 });
    await rig.engine.pause(session.queue);
    await rig.submit(session.id, 'a');
    expect(await refusal(rig.submit(session.id, 'b'))).toMatchObject({ kind: 'at_capacity', details: { running: 1, queued: 0 } });
  });

  it("checks the tenant and the grant on the session it reads under its lock: another tenant's session is not found, a provider no longer granted is refused, and neither records a run", async () => {
    rig = await makeRig();
    const session = await rig.session();
    const notFound = await refusal(rig.admission.submit('tenant-b', session.id, { prompt: 'a' }));
    expect(notFound).toMatchObject({ kind: 'not_found', message: `session ${session.id} not found` });
    // A shell session of tenant-b, as one created before the operator withdrew its shell grant (rig.ts).
    const withdrawn = { ...session, id: 'ses_withdrawn', tenant: 'tenant-b', provider: 'shell' };
    await rig.store.sessions.create(withdrawn);
    expect(await refusal(rig.admission.submit('tenant-b', withdrawn.id, { prompt: 'a' }))).toMatchObject({ kind: 'forbidden', details: { field: 'provider' } });
    expect(await rig.store.runs.listBySession(session.id)).toEqual([]);
    expect(await rig.store.runs.listBySession(withdrawn.id)).toEqual([]);
    // The refusals let the lock go: the owner's run is admitted.
    expect((await rig.submit(session.id, 'b')).session_id).toBe(session.id);
  });

  it("hands the freed slot to the session's oldest waiting run when a run ends", async () => {
    const session = await oneSlotSession();
    const [first, second, third] = [await rig.submit(session.id, 'a'), await rig.submit(session.id, 'b'), await rig.submit(session.id, 'c')];
    expect(await queuedEvent(session.id, third.id)).toMatchObject({ payload: { position: 2 } });

    await rig.recorder.finishWithoutStart(first.id, cancelledRun('before it started'));
    await waitFor(async () => await dispatched(second.id), 'the second run to be dispatched', 5_000);
    expect(await dispatched(third.id)).toBe(false);
  });

  it("takes no lock at a run's end when nothing waits in its session and nobody holds its lock; the tenant's slot is given back", async () => {
    const session = await oneSlotSession();
    const run = await rig.submit(session.id, 'a');
    const held = () => rig.store.holdings.takenBefore(TENANT, 'active_runs', Date.now() + 60_000);
    expect(await held()).toEqual([run.id]);
    const locks: string[] = [];
    const withLock = rig.cluster.withLock.bind(rig.cluster);
    rig.cluster.withLock = (key, work) => (locks.push(key), withLock(key, work));
    await rig.recorder.finishWithoutStart(run.id, cancelledRun('before it started'));
    // The slot is free: the next submit is dispatched at once.
    await waitFor(async () => (await held()).length === 0, "the ended run's slot to be given back", 5_000);
    expect(locks).toEqual([]);
    const next = await rig.submit(session.id, 'b');
    expect(await dispatched(next.id)).toBe(true);
  });

  it("at a run's end while a submit holds its session's lock, waits for it and starts the run that submit queued meanwhile", async () => {
    const session = await oneSlotSession();
    const first = await rig.submit(session.id, 'a');
    // A submit of another process, say, read the session while the first run was in flight: it queues its run behind it.
    let queue!: () => void;
    const queued = new Promise<void>((resolve) => (queue = resolve));
    const submit = withSessionLock(rig.cluster, session.id, async () => {
      await queued;
      const waiting = runRecord(session, { tenant: TENANT, dispatched: false, queue: session.queue });
      await rig.store.runs.create(waiting);
      return waiting;
    });
    await rig.recorder.finishWithoutStart(first.id, cancelledRun('before it started'));
    queue();
    const waiting = await submit;
    await waitFor(async () => await dispatched(waiting.id), 'the run queued under the lock to be dispatched', 5_000);
  });

  it('runs the waiting runs in FIFO order, one at a time, to the end', async () => {
    rig = await makeRig();
    const session = await rig.session({ max_concurrent_runs: 1 });
    const runs: RunRecord[] = [];
    for (const name of ['first', 'second', 'third']) runs.push(await rig.submit(session.id, `${name} [fixture:c1-hello]`));
    for (const run of runs) expect((await rig.ended(run.id)).state).toBe('completed');
    const order = (await rig.events(session.id)).filter((e) => e.kind === 'run_started' || e.kind === 'result').map((e) => `${e.kind}:${runs.findIndex((r) => r.id === e.run_id)}`);
    expect(order).toEqual(['run_started:0', 'result:0', 'run_started:1', 'result:1', 'run_started:2', 'result:2']);
  });

  it('hands a run over again when its command failed without reading it (the store away), also one the reconcile had joined', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    rig = await makeRig({ wrapStore: () => outage.store });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const run = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    // The reconcile after an outage submits it again under its id: it joins the command still queued.
    await rig.admission.resumeQueued();
    // The command's first store call, the executor's read of the run, finds the store away: the command
    // fails into the DLQ with the run still queued, dispatched and unowned (test/faults/redis-aof-restart.test.ts).
    outage.failNext(1);
    await rig.engine.resume(session.queue);
    expect((await rig.ended(run.id)).state).toBe('completed');
    expect(outage.failedCalls()).toBe(1);
    expect((await rig.events(session.id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
    expect(await rig.engine.deadLetters()).toEqual([]);
  });

  it('hands a run over again at most ASM_RUN_HAND_OVERS times; beyond that it waits in the dead-letter queue for the reconcile', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    const lines: string[] = [];
    const log = createLogger('warn', { write: (line: string) => void lines.push(line) } as DestinationStream);
    rig = await makeRig({ wrapStore: () => outage.store, env: { ASM_RUN_HAND_OVERS: '2' }, log });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const run = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    // The run's command, then each of its two hand-overs, finds the store away at its first reads (the
    // run and its session, read together) and at the read that would give up a claim whose answer was lost.
    outage.failNext(9, () => new Error().stack!.includes('RunExecutor.'));
    await rig.engine.resume(session.queue);
    await waitFor(() => lines.some((line) => line.includes('waits in the dead-letter queue')), 'the run left to the reconcile');
    expect(lines.filter((line) => line.includes('handing it over again'))).toHaveLength(2);
    expect(outage.failedCalls()).toBe(9);
    expect((await rig.store.runs.get(run.id))!.state).toBe('queued');
    expect((await rig.engine.deadLetters()).map((letter) => letter.commandId)).toEqual([run.id]);
    // The reconcile after an outage hands it over from the DLQ.
    await rig.admission.resumeQueued();
    expect((await rig.ended(run.id)).state).toBe('completed');
    expect(await rig.engine.deadLetters()).toEqual([]);
  });

  it('refuses a submit its lane cannot take (queue_full, 429): the run is recorded failed and holds no slot', async () => {
    rig = await makeRig({ lanes: [{ id: 'prompt', maxPending: 1 }] });
    const session = await rig.session({ max_concurrent_runs: 2 });
    await rig.engine.pause(session.queue);
    const accepted = await rig.submit(session.id, 'a');
    const error = await refusal(rig.submit(session.id, 'b'));
    expect(error).toMatchObject({ kind: 'queue_full', httpStatus: 429, details: { field: 'queue', queue: 'prompt' } });
    const refusedId = (error as AsmError).details!.run_id as string;
    expect(await rig.ended(refusedId)).toMatchObject({ state: 'failed', result: { error: { kind: 'queue_full' } } });
    expect((await rig.store.runs.get(accepted.id))!.state).toBe('queued');
    // The refused run frees its slot: a third run is handed to the lane rather than queued, and the full lane refuses it too.
    expect(await refusal(rig.submit(session.id, 'c'))).toMatchObject({ kind: 'queue_full' });
    const runs = await rig.store.runs.listBySession(session.id);
    expect(runs.filter((r) => r.state === 'failed' && r.dispatched)).toHaveLength(2);
  });

  it("sends a new run's record and its run_queued event together: the event does not wait for the record's answer (one round trip in Redis mode)", async () => {
    const session = await oneSlotSession();
    const { runs } = rig.store;
    const create = runs.create.bind(runs);
    let answer!: () => void;
    const answerable = new Promise<void>((resolve) => (answer = resolve));
    runs.create = async (run) => {
      await create(run);
      await answerable;
    };
    try {
      const submitted = rig.submit(session.id, 'a');
      const queued = await waitFor(
        async () => (await rig.store.events.read(session.id, { after: 0, limit: 10 })).find((e) => e.kind === 'run_queued'),
        "the run_queued event, while the record's write is unanswered",
      );
      answer();
      const run = await submitted;
      expect(queued).toMatchObject({ run_id: run.id, payload: { queue: session.queue, position: 0 } });
      expect(await dispatched(run.id)).toBe(true);
    } finally {
      runs.create = create;
    }
  });

  it("refuses a submit whose run's record could not be written: the tenant's slot is given back and its event is not tried again", async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    rig = await makeRig({ wrapStore: () => outage.store });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    // The store is away for the record and for the event sent with it.
    outage.failNext(2, () => new Error().stack!.includes('createRun'));
    expect(await refusal(rig.submit(session.id, 'a'))).toMatchObject({ kind: 'not_ready', httpStatus: 503 });
    expect(outage.failedCalls()).toBe(2);
    expect(await rig.store.holdings.takenBefore(TENANT, 'active_runs', Date.now() + 60_000)).toEqual([]);
    // Back: the next submit is the session's first run and first event; no retry of the refused one's event landed meanwhile.
    const run = await rig.submit(session.id, 'b');
    expect((await rig.store.runs.listBySession(session.id)).map((r) => r.id)).toEqual([run.id]);
    expect((await rig.store.events.read(session.id, { after: 0, limit: 10 })).map((e) => [e.run_id, e.kind])).toEqual([[run.id, 'run_queued']]);
    expect(outage.failedCalls()).toBe(2);
  });

  it("logs as an error a record refused alone while its run_queued event was stored: the event names a run that does not exist", async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    const lines: string[] = [];
    const log = createLogger('warn', { write: (line: string) => void lines.push(line) } as DestinationStream);
    rig = await makeRig({ wrapStore: () => outage.store, log });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    // The first of the two writes sent together, the record's, is refused; the event's lands.
    outage.failNext(1, () => new Error().stack!.includes('createRun'));
    expect(await refusal(rig.submit(session.id, 'a'))).toMatchObject({ kind: 'not_ready' });
    const [orphan] = await rig.store.events.read(session.id, { after: 0, limit: 10 });
    expect(orphan).toMatchObject({ kind: 'run_queued' });
    expect(await rig.store.runs.get(orphan!.run_id!)).toBeUndefined();
    const logged = lines.map((line) => JSON.parse(line)).filter((line) => line.msg.includes('could not be written but its first event was'));
    expect(logged).toMatchObject([{ level: 50, runId: orphan!.run_id, kind: 'run_queued' }]);
  });

  it('retries the run_queued event of a run whose record was written, through a store outage', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    rig = await makeRig({ wrapStore: () => outage.store });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    // Of the two writes sent together, the record's lands and the event's does not.
    let sent = 0;
    outage.failNext(1, () => new Error().stack!.includes('createRun') && sent++ === 1);
    const run = await rig.submit(session.id, 'a');
    expect(outage.failedCalls()).toBe(1);
    expect((await rig.events(session.id, run.id)).map((e) => e.kind)).toEqual(['run_queued']);
    expect(await dispatched(run.id)).toBe(true);
  });

  it('refuses runs for an unknown session (404), a closing one (409) and an unknown queue (400 naming the field)', async () => {
    rig = await makeRig();
    expect(await refusal(rig.submit('ses_nope', 'a'))).toMatchObject({ kind: 'not_found' });
    const session = await rig.session();
    expect(await refusal(rig.submit(session.id, 'a', { queue: 'no-such-lane' }))).toMatchObject({ kind: 'bad_request', details: { field: 'queue' } });
    await rig.store.sessions.update(session.id, { state: 'closing' });
    const closing = await refusal(rig.submit(session.id, 'a'));
    expect(closing.kind).toBe('conflict');
    expect(closing.httpStatus).toBe(409);
    expect(await rig.store.runs.listBySession(session.id)).toEqual([]);
  });

  it('puts a run on the queue it names, over the session default', async () => {
    rig = await makeRig();
    const session = await rig.session();
    await rig.engine.pause('skill');
    const run = await rig.submit(session.id, 'a', { queue: 'skill' });
    expect(run.queue).toBe('skill');
    expect(await queuedEvent(session.id, run.id)).toMatchObject({ payload: { queue: 'skill' } });
    expect((await rig.engine.metrics()).find((m) => m.id === 'skill')!.pending).toBe(1);
  });
});
