/**
 * waitForRun on both stores: it resolves on the run's own terminal event and on no other run's,
 * gives the run as it stands after the timeout, returns a run that had ended already, answers
 * not_found for a missing run, and, told the run's session, reads the run once before waiting (the
 * subscription first). RunEnds, a watch begun before its run exists (a submit with `wait: true`),
 * hears the run's end whether it comes before or after `until`, and reads the run only then.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { RunEnds, waitForRun } from '../../src/sessions/wait-for-run.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { createRedisStore } from '../../src/store/redis.js';
import type { RunRecord, Store } from '../../src/store/types.js';
import { newEvent, runRecord, sessionRecord } from '../store/contract.js';

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
  /** A watch of a new session, begun before its run is created; and that run. */
  async function watchedRun(store: Store): Promise<{ ends: RunEnds; run: RunRecord }> {
    const session = sessionRecord();
    await store.sessions.create(session);
    const ends = new RunEnds(store, session.id);
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

  it('waits for the end of a run still going, reading it only once it ended', async () => {
    const { store, reads } = await counting(open);
    const { ends, run } = await watchedRun(store);
    const before = reads();
    const waiting = ends.until(run, 30_000);
    await end(store, run);
    expect(await waiting).toMatchObject({ id: run.id, state: 'completed' });
    expect(reads() - before).toBe(1);
    ends.stop();
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
});
