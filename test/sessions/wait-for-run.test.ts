/**
 * waitForRun on both stores: it resolves on the run's own terminal event and on no other run's,
 * gives the run as it stands after the timeout, returns a run that had ended already, answers
 * not_found for a missing run, and, told the run's session, reads the run once before waiting (the
 * subscription first). RunEnds, a watch begun before its run exists (a submit with `wait: true`),
 * hears the run's end whether it comes before or after `until`, and reads the run only then; told
 * of the ends its process records (RunRecorder.onSessionRunEnded), it answers with the run as
 * recorded and reads nothing, and still reads a run that ended elsewhere.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { cancelledRun } from '../../src/errors/kinds.js';
import { LocalCluster } from '../../src/nodes/local.js';
import { RunRecorder } from '../../src/sessions/recorder.js';
import { RunEnds, waitForRun } from '../../src/sessions/wait-for-run.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { createRedisStore } from '../../src/store/redis.js';
import type { RunRecord, Store } from '../../src/store/types.js';
import { newEvent, runRecord, sessionRecord } from '../store/contract.js';
import { REPORT } from './rig.js';

const url = inject('asmTestRedisUrl') ?? process.env.ASM_TEST_REDIS_URL;
if (!url) throw new Error('no test Redis: is test/setup/redis.ts registered as globalSetup?');

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
});

const stores: Array<[string, () => Promise<Store>]> = [
  ['memory', async () => createMemoryStore({ eventsPerSession: 100 })],
  ['redis', async () => createRedisStore({ url, prefix: `asmwait-${randomUUID().slice(0, 8)}`, eventsPerSession: 100 })],
];

/** A store whose runs.get calls are counted. */
async function counting(open: () => Promise<Store>): Promise<{ store: Store; reads: () => number }> {
  const store = await open();
  opened.push(store);
  let reads = 0;
  const get = store.runs.get.bind(store.runs);
  store.runs.get = (id: string) => {
    reads++;
    return get(id);
  };
  return { store, reads: () => reads };
}

/** A recorder on `store`, as a process that executes runs has one. */
function recorderOn(store: Store): RunRecorder {
  return new RunRecorder({ store, cluster: new LocalCluster('test-node', REPORT), active: new Map(), outageMs: 1_000, log: pino({ level: 'silent' }) });
}

async function queuedRun(store: Store): Promise<RunRecord> {
  const session = sessionRecord();
  await store.sessions.create(session);
  const run = runRecord(session);
  await store.runs.create(run);
  return run;
}

describe.each(stores)('waitForRun (%s store)', (_name, open) => {
  it("resolves on the run's own terminal event with the run as recorded", async () => {
    const { store } = await counting(open);
    const run = await queuedRun(store);
    const waiting = waitForRun(store, run.id, 30_000, run.session_id);
    await store.runs.update(run.id, { state: 'completed' });
    await store.events.append(newEvent(run, { kind: 'run_completed', payload: { status: 'completed' } }));
    expect(await waiting).toMatchObject({ id: run.id, state: 'completed' });
  });

  it("ignores another run's terminal event: gives the run as it stands once the timeout passes", async () => {
    const { store } = await counting(open);
    const run = await queuedRun(store);
    const other = runRecord(sessionRecord({ id: run.session_id }));
    await store.runs.create(other);
    const started = Date.now();
    const waiting = waitForRun(store, run.id, 300, run.session_id);
    await store.runs.update(other.id, { state: 'completed' });
    await store.events.append(newEvent(other, { kind: 'run_completed', payload: { status: 'completed' } }));
    expect(await waiting).toMatchObject({ id: run.id, state: 'queued' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('told the session, reads the run once and returns it when it had ended already; not told, reads it twice', async () => {
    const { store, reads } = await counting(open);
    const run = await queuedRun(store);
    await store.runs.update(run.id, { state: 'interrupted' });
    const before = reads();
    expect(await waitForRun(store, run.id, 30_000, run.session_id)).toMatchObject({ state: 'interrupted' });
    expect(reads() - before).toBe(1);
    expect(await waitForRun(store, run.id, 30_000)).toMatchObject({ state: 'interrupted' });
    expect(reads() - before).toBe(3);
  });

  it('answers not_found for a missing run, told its session or not', async () => {
    const { store } = await counting(open);
    const run = await queuedRun(store);
    for (const sessionId of [run.session_id, undefined]) {
      await expect(waitForRun(store, 'run_missing', 1_000, sessionId)).rejects.toMatchObject({ kind: 'not_found' });
    }
  });
});

describe.each(stores)('RunEnds (%s store)', (_name, open) => {
  /** A watch of a new session, begun before its run is created (told of `recorder`'s ends, if given); and that run. */
  async function watchedRun(store: Store, recorder?: RunRecorder): Promise<{ ends: RunEnds; run: RunRecord }> {
    const session = sessionRecord();
    await store.sessions.create(session);
    const ends = new RunEnds(store, session.id, recorder);
    const run = runRecord(session);
    await store.runs.create(run);
    return { ends, run };
  }

  const end = async (store: Store, run: RunRecord) => {
    await store.runs.update(run.id, { state: 'completed' });
    await store.events.append(newEvent(run, { kind: 'run_completed', payload: { status: 'completed' } }));
  };

  it('hears the end of a run that ended before `until`, and reads the run once, after it', async () => {
    const { store, reads } = await counting(open);
    const { ends, run } = await watchedRun(store);
    await end(store, run);
    const before = reads();
    expect(await ends.until(run, 30_000)).toMatchObject({ id: run.id, state: 'completed' });
    expect(reads() - before).toBe(1);
    ends.stop();
  });

  it("waits for the end of a run still going, reading it only once it ended; so does a watch told of this process's ends, for a run ended elsewhere", async () => {
    const { store, reads } = await counting(open);
    for (const recorder of [undefined, recorderOn(store)]) {
      const { ends, run } = await watchedRun(store, recorder);
      const before = reads();
      const waiting = ends.until(run, 30_000);
      await end(store, run);
      expect(await waiting).toMatchObject({ id: run.id, state: 'completed' });
      expect(reads() - before).toBe(1);
      ends.stop();
    }
  });

  it("ignores another run's end, before `until` or after: gives the run as it stands once the timeout passes", async () => {
    const { store } = await counting(open);
    const { ends, run } = await watchedRun(store);
    const [early, late] = [runRecord(sessionRecord({ id: run.session_id })), runRecord(sessionRecord({ id: run.session_id }))];
    await Promise.all([store.runs.create(early), store.runs.create(late)]);
    await end(store, early);
    const started = Date.now();
    const waiting = ends.until(run, 300);
    await end(store, late);
    expect(await waiting).toMatchObject({ id: run.id, state: 'queued' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    ends.stop();
  });

  describe('told of the ends its process records', () => {
    /** A new session with `count` queued runs, a recorder on `store` (as a process that executes runs has) and a watch of the session told of its ends. */
    async function locally(store: Store, count: number): Promise<{ sessionId: string; recorder: RunRecorder; ends: RunEnds; runs: RunRecord[] }> {
      const session = sessionRecord();
      await store.sessions.create(session);
      const recorder = recorderOn(store);
      const ends = new RunEnds(store, session.id, recorder);
      const runs = Array.from({ length: count }, () => runRecord(session));
      await Promise.all(runs.map((run) => store.runs.create(run)));
      return { sessionId: session.id, recorder, ends, runs };
    }

    it('answers a run whose end it recorded, before `until` or after, with the run as recorded, reading nothing for it', async () => {
      const { store, reads } = await counting(open);
      const { sessionId, recorder, ends, runs } = await locally(store, 2);
      const [early, late] = runs as [RunRecord, RunRecord];
      await recorder.finishWithoutStart(early.id, cancelledRun('ended before until'));
      let before = reads();
      expect(await ends.until(early, 30_000)).toMatchObject({ id: early.id, state: 'interrupted', result: { status: 'interrupted' } });
      expect(reads() - before).toBe(0);
      ends.stop();

      const watching = new RunEnds(store, sessionId, recorder);
      const waiting = watching.until(late, 30_000);
      before = reads();
      await recorder.finishWithoutStart(late.id, cancelledRun('ended after until'));
      const ended = await waiting;
      expect(ended).toMatchObject({ id: late.id, state: 'interrupted' });
      // The end reads the run once itself (RunRecorder.endUnfinished); the watch adds no read, though
      // the memory store hands the terminal event to its watchers within the append, before the
      // recorder tells of the end (so may Redis's subscriber connection).
      expect(reads() - before).toBe(1);
      expect(ended).toEqual(await store.runs.get(late.id));
      watching.stop();
    });

    it("answers a run still going when its wait times out, without waiting for the run's writes queued here", async () => {
      const { store } = await counting(open);
      const { recorder, ends, runs } = await locally(store, 1);
      const run = runs[0]!;
      let release = () => {};
      const writing = recorder.serialize(run.id, () => new Promise<void>((resolve) => (release = resolve)));
      const started = Date.now();
      expect(await ends.until(run, 200)).toMatchObject({ id: run.id, state: 'queued' });
      expect(Date.now() - started).toBeLessThan(2_000);
      release();
      await writing;
      ends.stop();
    });

    it('stops hearing the recorder once stopped', async () => {
      const { store } = await counting(open);
      const { recorder, ends, runs } = await locally(store, 1);
      const run = runs[0]!;
      ends.stop();
      await recorder.finishWithoutStart(run.id, cancelledRun('ended after stop'));
      // Neither the recorder nor the store's events reach a stopped watch: it waits out its timeout.
      const started = Date.now();
      expect(await ends.until(run, 200)).toMatchObject({ id: run.id });
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    });
  });
});
