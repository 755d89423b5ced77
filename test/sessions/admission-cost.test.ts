/**
 * Admission stays O(1) in a session's history (issue 14): admitting a run to a session that has
 * 10,000 finished runs costs exactly the store operations it costs on a fresh session. Counted on
 * the real stores: every call into the memory store's parts, and every Redis command that touches
 * the deployment's keys (MONITOR on the test Redis, scripts' inner commands included). The runs'
 * lane is paused, so only admission (and the run's hand-over to its lane) touches the store.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { createMemoryStore } from '../../src/store/memory.js';
import { createRedisStore } from '../../src/store/redis.js';
import type { RunRecord, SessionRecord, Store } from '../../src/store/types.js';
import { makeRig, type Rig } from './rig.js';

const HISTORY = 10_000;
const url = inject('asmTestRedisUrl') ?? process.env.ASM_TEST_REDIS_URL;
if (!url) throw new Error('no test Redis: is test/setup/redis.ts registered as globalSetup?');
const admin = new Redis(url, { maxRetriesPerRequest: null });

let rig: Rig | undefined;
let store: Store | undefined;
afterEach(async () => {
  await rig?.close();
  await store?.close();
  rig = store = undefined;
});
afterAll(() => admin.quit());

/** `count` finished runs of the session, shaped as `template` (a run admitted before), written as the store keeps any run. */
async function writeHistory(target: Store, session: SessionRecord, template: RunRecord, count: number): Promise<void> {
  const writes: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const at = new Date(Date.parse(session.created_at) + i).toISOString();
    const run: RunRecord = { ...template, id: `run_${randomUUID()}`, session_id: session.id, state: 'completed', dispatched: true, created_at: at, started_at: at, finished_at: at };
    writes.push(target.runs.create(run));
    if (writes.length === 500) await Promise.all(writes.splice(0));
  }
  await Promise.all(writes);
}

/**
 * The store operations of admitting one run to a fresh session and to a session with HISTORY
 * finished runs, as `record` lists them for `admit`.
 */
async function admissionOperations(real: Store, record: (admit: () => Promise<RunRecord>) => Promise<string[]>) {
  rig = await makeRig({ store: real });
  const [warm, fresh, old] = [await rig.session(), await rig.session(), await rig.session()];
  await rig.engine.pause(fresh.queue);
  // Unrecorded: the first use of each Redis script on a connection sends its body (EVAL), later ones its SHA (src/store/redis-schema.ts, withScripts).
  await rig.submit(warm.id, 'warm-up');
  let template: RunRecord | undefined;
  const freshOps = await record(async () => (template = await rig!.submit(fresh.id, 'first')));
  await writeHistory(real, old, template!, HISTORY);
  expect((await real.runs.pageBySession(old.id, { limit: HISTORY + 1 })).items).toHaveLength(HISTORY);
  let admitted: RunRecord | undefined;
  const oldOps = await record(async () => (admitted = await rig!.submit(old.id, 'after history')));
  expect((await real.runs.get(admitted!.id))!.dispatched).toBe(true);
  return { freshOps, oldOps };
}

describe('admission cost', () => {
  it(`memory store: a session with ${HISTORY} finished runs admits with the calls of a fresh one`, async () => {
    const memory = createMemoryStore({ eventsPerSession: 1000 });
    let calls: string[] | undefined;
    // Every method of the store and of every part, counted while recording with how many records it
    // answered (a list answers its length), since a memory call that reads the whole history is still one call.
    const counting =
      (name: string, method: (...args: unknown[]) => unknown, target: object) =>
      (...args: unknown[]) => {
        const result = method.apply(target, args);
        const log = calls;
        if (log) {
          const at = log.push(name) - 1;
          void Promise.resolve(result).then((answer) => (log[at] += ` → ${Array.isArray(answer) ? answer.length : 1}`));
        }
        return result;
      };
    const counted = Object.fromEntries(
      Object.entries(memory).map(([name, part]) => [
        name,
        typeof part === 'function'
          ? counting(name, part, memory)
          : new Proxy(part as object, {
              get(target, key, receiver) {
                const value = Reflect.get(target, key, receiver);
                return typeof value === 'function' ? counting(`${name}.${String(key)}`, value, target) : value;
              },
            }),
      ]),
    ) as unknown as Store;
    const { freshOps, oldOps } = await admissionOperations(counted, async (admit) => {
      calls = [];
      await admit();
      const seen = calls;
      calls = undefined;
      return seen;
    });
    expect(freshOps.length).toBeGreaterThan(3);
    expect(freshOps).toContain('admissionView → 1');
    expect(oldOps).toEqual(freshOps);
    // A run dispatched at once is written once: recorded as handed over at its creation, with no update of its own.
    const runWrites = freshOps.map((op) => op.split(' ')[0]).filter((op) => op === 'runs.create' || op === 'runs.update');
    expect(runWrites).toEqual(['runs.create']);
  });

  it(`Redis store: a session with ${HISTORY} finished runs admits with the Redis commands of a fresh one`, async () => {
    const prefix = `asmcost-${randomUUID().slice(0, 8)}`;
    store = await createRedisStore({ url, prefix, eventsPerSession: 1000 });
    const monitor = await admin.monitor();
    let commands: string[] | undefined;
    let sentinel = 'none yet';
    let sentinelSeen: () => void = () => undefined;
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (args.some((arg) => arg === sentinel)) return sentinelSeen();
      if (commands && args.some((arg) => arg.includes(`${prefix}:`))) commands.push(args[0]!.toLowerCase());
    });
    try {
      // MONITOR reports asynchronously: once a sentinel sent afterwards is seen, every command sent before it has been.
      const settle = async () => {
        sentinel = `${prefix}-sentinel-${randomUUID()}`;
        const seen = new Promise<void>((resolve) => (sentinelSeen = resolve));
        await admin.echo(sentinel);
        await seen;
      };
      const { freshOps, oldOps } = await admissionOperations(store, async (admit) => {
        await settle();
        commands = [];
        await admit();
        await settle();
        const counted = commands;
        commands = undefined;
        return counted;
      });
      expect(freshOps.length).toBeGreaterThan(3);
      expect(oldOps.sort()).toEqual(freshOps.sort());
    } finally {
      monitor.disconnect();
      for await (const keys of admin.scanStream({ match: `${prefix}:*`, count: 1000 })) if (keys.length) await admin.del(...(keys as string[]));
    }
  });
});
