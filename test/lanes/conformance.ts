/**
 * The behaviour every LaneEngine must show, whatever carries its commands: the in-process engine
 * runs it, and so will the BullMQ engine, where each command costs a Redis round trip. Hence:
 * - no assertion depends on sub-millisecond timing, waits are event- or poll-driven with generous
 *   limits, and the few time bounds are in hundreds of milliseconds;
 * - payloads are JSON; behaviour lives in handlers registered by type, which close over test state;
 * - every engine a test creates is closed after it.
 * Sections A–G cover what a3s-lane's own suite covers, the later ones the rules it never tested
 * (src/lanes/README.md, "Scheduling rules" and "a3s-lane defects fixed").
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_LANES, retry } from '../../src/lanes/policies.js';
import {
  LaneError,
  type CommandContext,
  type CommandHandle,
  type CommandHandler,
  type EngineOptions,
  type LaneConfig,
  type LaneEngine,
  type LaneEvent,
  type LaneEventKey,
  type LaneMetrics,
} from '../../src/lanes/types.js';
import { waitFor } from '../helpers/wait.js';

export type EngineFactory = (options: EngineOptions) => Promise<LaneEngine> | LaneEngine;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Named gates that handlers wait on, so a test decides when a command finishes. */
function gates() {
  const all = new Map<string, ReturnType<typeof deferred<void>>>();
  const get = (key: string) => {
    let gate = all.get(key);
    if (gate === undefined) all.set(key, (gate = deferred()));
    return gate;
  };
  return { wait: (key: string) => get(key).promise, open: (key: string) => get(key).resolve() };
}

/** Resolves when the signal aborts, rejecting with its reason, as a well-behaved handler does. */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/** Settles to the rejection reason, failing if the promise fulfils. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

async function expectLaneError(promise: Promise<unknown>, code: LaneError['code'], message?: string): Promise<LaneError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(LaneError);
  expect((error as LaneError).code).toBe(code);
  if (message !== undefined) expect((error as LaneError).message).toBe(message);
  return error as LaneError;
}

function lane(id: string, priority: number, extra: Partial<LaneConfig> = {}): LaneConfig {
  return { id, priority, minConcurrency: 1, maxConcurrency: 1, ...extra };
}

function keysFor(events: LaneEvent[], commandId: string): LaneEventKey[] {
  return events.filter((e) => e.payload?.command_id === commandId).map((e) => e.key);
}

async function laneMetrics(engine: LaneEngine, id: string): Promise<LaneMetrics> {
  const found = (await engine.metrics()).find((m) => m.id === id);
  if (found === undefined) throw new Error(`no metrics for lane ${id}`);
  return found;
}

/** Tracks how many handler invocations overlap. */
function concurrency() {
  let current = 0;
  const stats = { max: 0 };
  const run = async <T>(work: () => Promise<T>): Promise<T> => {
    current++;
    stats.max = Math.max(stats.max, current);
    try {
      return await work();
    } finally {
      current--;
    }
  };
  return { stats, run };
}

export function laneEngineConformance(name: string, factory: EngineFactory): void {
  describe(`LaneEngine conformance: ${name}`, () => {
    let engines: LaneEngine[] = [];

    afterEach(async () => {
      await Promise.all(engines.map((engine) => engine.close()));
      engines = [];
    });

    async function make(options: EngineOptions, handlers: Record<string, CommandHandler> = {}): Promise<LaneEngine> {
      const engine = await factory(options);
      engines.push(engine);
      for (const [type, handler] of Object.entries(handlers)) engine.register(type, handler);
      return engine;
    }

    function record(engine: LaneEngine): LaneEvent[] {
      const events: LaneEvent[] = [];
      engine.subscribe((event) => events.push(event));
      return events;
    }

    const echo: CommandHandler = (payload) => payload;

    describe('A. submission, routing and stats', () => {
      it('returns the id and the handler value, and passes payload and context to the handler', async () => {
        const contexts: CommandContext[] = [];
        const engine = await make(
          { lanes: [lane('work', 0)] },
          {
            double: (payload: { n: number }, ctx) => {
              contexts.push(ctx);
              return { doubled: payload.n * 2 };
            },
          },
        );
        await engine.start();
        const handle = await engine.submit('work', { type: 'double', payload: { n: 21 } });
        expect(typeof handle.id).toBe('string');
        expect(handle.id.length).toBeGreaterThan(0);
        await expect(handle.result).resolves.toEqual({ doubled: 42 });
        expect(contexts).toHaveLength(1);
        expect(contexts[0]).toMatchObject({ id: handle.id, lane: 'work', type: 'double', attempt: 1 });
        expect(contexts[0].signal.aborted).toBe(false);
      });

      it('uses a caller-chosen id, and a second submit with a live id joins the first', async () => {
        let calls = 0;
        const engine = await make({ lanes: [lane('work', 0)] }, { count: () => ++calls });
        const first = await engine.submit('work', { type: 'count', payload: null, id: 'my-id' });
        const second = await engine.submit('work', { type: 'count', payload: null, id: 'my-id' });
        expect(first.id).toBe('my-id');
        expect(second.id).toBe('my-id');
        expect((await laneMetrics(engine, 'work')).pending).toBe(1);
        await engine.start();
        expect(await first.result).toBe(1);
        expect(await second.result).toBe(1);
        expect(calls).toBe(1);
      });

      it('rejects an unknown lane with LaneNotFound carrying the id', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { echo });
        await engine.start();
        await expectLaneError(engine.submit('nope', { type: 'echo', payload: 1 }), 'lane_not_found', 'Lane not found: nope');
      });

      it('rejects a command type without a handler', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { echo });
        await engine.start();
        await expectLaneError(engine.submit('work', { type: 'unregistered', payload: 1 }), 'unknown_command_type');
      });

      it('keeps submits pending until start, reports them per lane, then runs them', async () => {
        const engine = await make({ lanes: [...DEFAULT_LANES] }, { echo });
        const handles = [
          await engine.submit('system', { type: 'echo', payload: 's' }),
          await engine.submit('query', { type: 'echo', payload: 'q1' }),
          await engine.submit('query', { type: 'echo', payload: 'q2' }),
          await engine.submit('prompt', { type: 'echo', payload: 'p' }),
        ];
        await sleep(50);
        const pending = Object.fromEntries((await engine.metrics()).map((m) => [m.id, m.pending]));
        expect(pending).toEqual({ system: 1, control: 0, query: 2, session: 0, skill: 0, prompt: 1 });
        await engine.start();
        expect(await Promise.all(handles.map((h) => h.result))).toEqual(['s', 'q1', 'q2', 'p']);
        const after = await engine.metrics();
        expect(after.every((m) => m.pending === 0 && m.active === 0)).toBe(true);
      });

      it('reports its lanes as configured', async () => {
        const engine = await make({ lanes: [...DEFAULT_LANES] });
        const lanes = engine.lanes();
        // The values themselves are pinned once, in memory-engine.test.ts ("has the a3s-lane default lanes").
        expect(lanes.map((l) => [l.id, l.priority, l.maxConcurrency])).toEqual(DEFAULT_LANES.map((l) => [l.id, l.priority, l.maxConcurrency]));
      });

      it('returns each of five commands its own value', async () => {
        const engine = await make({ lanes: [lane('work', 0, { maxConcurrency: 2 })] }, { echo });
        await engine.start();
        const handles = await Promise.all([0, 1, 2, 3, 4].map((i) => engine.submit('work', { type: 'echo', payload: { i } })));
        expect(await Promise.all(handles.map((h) => h.result))).toEqual([0, 1, 2, 3, 4].map((i) => ({ i })));
      });
    });

    describe('B. timeout', () => {
      it('fails a command that outlives its timeout with Timeout(50ms), aborting its signal', async () => {
        let reason: unknown;
        const engine = await make(
          { lanes: [lane('work', 0, { timeoutMs: 50 })] },
          {
            slow: async (_payload, ctx) => {
              await untilAborted(ctx.signal).catch((error) => (reason = error));
              await sleep(5_000);
            },
          },
        );
        const events = record(engine);
        await engine.start();
        const started = Date.now();
        const handle = await engine.submit('work', { type: 'slow', payload: null });
        await expectLaneError(handle.result, 'timeout', 'Command timed out after 50ms');
        expect(Date.now() - started).toBeLessThan(1_000);
        expect(reason).toBeInstanceOf(LaneError);
        expect(keysFor(events, handle.id)).toEqual(['queue.command.submitted', 'queue.command.started', 'queue.command.timeout']);
        expect((await laneMetrics(engine, 'work')).timeout).toBe(1);
      });

      it('lets commands finish when there is no timeout or it is generous', async () => {
        const engine = await make(
          { lanes: [lane('plain', 0), lane('generous', 1, { timeoutMs: 5_000 })] },
          { nap: async (ms: number) => (await sleep(ms), 'done') },
        );
        await engine.start();
        const a = await engine.submit('plain', { type: 'nap', payload: 50 });
        const b = await engine.submit('generous', { type: 'nap', payload: 10 });
        expect(await a.result).toBe('done');
        expect(await b.result).toBe('done');
      });

      it('releases the slot at the deadline even if the handler never settles', async () => {
        const engine = await make(
          { lanes: [lane('work', 0, { timeoutMs: 100 })] },
          { stuck: () => new Promise(() => {}), quick: () => 'quick' },
        );
        await engine.start();
        const stuck = await engine.submit('work', { type: 'stuck', payload: null });
        const quick = await engine.submit('work', { type: 'quick', payload: null });
        expect(await quick.result).toBe('quick');
        await expectLaneError(stuck.result, 'timeout');
        expect((await laneMetrics(engine, 'work')).active).toBe(0);
      });
    });

    describe('C. retry', () => {
      it('retries a failing command and returns the value of the attempt that succeeded', async () => {
        const attempts: number[] = [];
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(3, 10) })] },
          {
            flaky: (_payload, ctx) => {
              attempts.push(ctx.attempt);
              if (ctx.attempt < 3) throw new Error(`attempt ${ctx.attempt} failed`);
              return { attempts: ctx.attempt };
            },
          },
        );
        const events = record(engine);
        await engine.start();
        const handle = await engine.submit('work', { type: 'flaky', payload: null });
        expect(await handle.result).toEqual({ attempts: 3 });
        expect(attempts).toEqual([1, 2, 3]);
        const retries = events.filter((e) => e.key === 'queue.command.retry');
        expect(retries.map((e) => e.payload?.attempt)).toEqual([1, 2]);
        expect(events.filter((e) => e.key === 'queue.command.started').map((e) => e.payload?.attempt)).toEqual([1, 2, 3]);
      });

      it('never retries an error marked retryable: false, and tells each attempt how many retries are left', async () => {
        const seen: Array<[number, number]> = [];
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(3, 10) })], dlqSize: 10 },
          {
            flaky: (_payload, ctx) => {
              seen.push([ctx.attempt, ctx.retriesLeft]);
              if (ctx.attempt < 2) throw new Error('transient');
              throw Object.assign(new Error('permanent'), { retryable: false });
            },
          },
        );
        await engine.start();
        const handle = await engine.submit('work', { type: 'flaky', payload: null });
        await expect(handle.result).rejects.toThrow('permanent');
        expect(seen).toEqual([
          [1, 3],
          [2, 2],
        ]);
        expect((await engine.deadLetters()).map((l) => l.attempts)).toEqual([2]);
      });

      it('returns the original error once retries are exhausted, after maxRetries + 1 executions', async () => {
        let calls = 0;
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(2, 10) })] },
          {
            broken: () => {
              calls++;
              throw new Error('Always fails');
            },
          },
        );
        await engine.start();
        const handle = await engine.submit('work', { type: 'broken', payload: null });
        const error = await rejection(handle.result);
        expect(error).not.toBeInstanceOf(LaneError);
        expect((error as Error).message).toBe('Always fails');
        expect(calls).toBe(3);
      });

      it('runs a succeeding command once under a retry policy', async () => {
        let calls = 0;
        const engine = await make({ lanes: [lane('work', 0, { retry: retry.exponential(3) })] }, { once: () => ++calls });
        await engine.start();
        const handle = await engine.submit('work', { type: 'once', payload: null });
        expect(await handle.result).toBe(1);
        await sleep(150);
        expect(calls).toBe(1);
      });

      it('waits the retry delay before the next attempt', async () => {
        const startedAt: number[] = [];
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(1, 300) })] },
          {
            flaky: (_payload, ctx) => {
              startedAt.push(Date.now());
              if (ctx.attempt === 1) throw new Error('first fails');
              return 'ok';
            },
          },
        );
        await engine.start();
        const handle = await engine.submit('work', { type: 'flaky', payload: null });
        expect(await handle.result).toBe('ok');
        expect(startedAt[1] - startedAt[0]).toBeGreaterThanOrEqual(250);
      });

      it('sends a retried command to the tail of its lane', async () => {
        const order: string[] = [];
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(1, 10) })] },
          {
            step: async (payload: { name: string; failFirst?: boolean; ms: number }, ctx) => {
              order.push(`${payload.name}${ctx.attempt}`);
              await sleep(payload.ms);
              if (payload.failFirst && ctx.attempt === 1) throw new Error('again');
              return payload.name;
            },
          },
        );
        const a = await engine.submit('work', { type: 'step', payload: { name: 'a', failFirst: true, ms: 10 } });
        const b = await engine.submit('work', { type: 'step', payload: { name: 'b', ms: 200 } });
        const c = await engine.submit('work', { type: 'step', payload: { name: 'c', ms: 10 } });
        await engine.start();
        await Promise.all([a.result, b.result, c.result]);
        expect(order).toEqual(['a1', 'b1', 'c1', 'a2']);
      });

      it('treats a timeout as a retryable failure: a later attempt can still succeed', async () => {
        let firstReason: unknown;
        const engine = await make(
          { lanes: [lane('work', 0, { timeoutMs: 100, retry: retry.fixed(1, 10) })] },
          {
            slowFirst: async (_payload, ctx) => {
              if (ctx.attempt === 1) {
                await untilAborted(ctx.signal).catch((error) => (firstReason = error));
                return 'too late';
              }
              return 'second';
            },
          },
        );
        const events = record(engine);
        await engine.start();
        const handle = await engine.submit('work', { type: 'slowFirst', payload: null });
        expect(await handle.result).toBe('second');
        expect((firstReason as LaneError).code).toBe('timeout');
        expect(keysFor(events, handle.id)).toEqual([
          'queue.command.submitted',
          'queue.command.started',
          'queue.command.retry',
          'queue.command.started',
          'queue.command.completed',
        ]);
      });

      it('reports a terminal timeout after retries as timeout, never failed, after dead_lettered', async () => {
        const engine = await make(
          { lanes: [lane('work', 0, { timeoutMs: 60, retry: retry.fixed(1, 10) })], dlqSize: 10 },
          { stuck: (_payload, ctx) => untilAborted(ctx.signal) },
        );
        const events = record(engine);
        await engine.start();
        const handle = await engine.submit('work', { type: 'stuck', payload: null });
        await expectLaneError(handle.result, 'timeout', 'Command timed out after 60ms');
        expect(keysFor(events, handle.id)).toEqual([
          'queue.command.submitted',
          'queue.command.started',
          'queue.command.retry',
          'queue.command.started',
          'queue.command.dead_lettered',
          'queue.command.timeout',
        ]);
        const metrics = await laneMetrics(engine, 'work');
        expect([metrics.timeout, metrics.failed, metrics.retried]).toEqual([1, 0, 1]);
      });
    });

    describe('D. dead-letter queue', () => {
      it('dead-letters a command that exhausted its retries, keeping its payload', async () => {
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(2, 10) })], dlqSize: 100 },
          {
            broken: () => {
              throw new Error('Always fails');
            },
          },
        );
        await engine.start();
        const handle = await engine.submit('work', { type: 'broken', payload: { job: 7 } });
        await rejection(handle.result);
        const letters = await engine.deadLetters();
        expect(letters).toHaveLength(1);
        expect(letters[0]).toMatchObject({
          commandId: handle.id,
          commandType: 'broken',
          laneId: 'work',
          payload: { job: 7 },
          attempts: 3,
        });
        expect(letters[0].error).toContain('Always fails');
        expect(typeof letters[0].failedAt).toBe('number');
        expect((await laneMetrics(engine, 'work')).deadLettered).toBe(1);
      });

      it('keeps no dead letters when the DLQ is not configured', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { broken: () => Promise.reject(new Error('no')) });
        const events = record(engine);
        await engine.start();
        const handle = await engine.submit('work', { type: 'broken', payload: null });
        await rejection(handle.result);
        expect(await engine.deadLetters()).toEqual([]);
        expect(events.some((e) => e.key === 'queue.command.dead_lettered')).toBe(false);
        expect(keysFor(events, handle.id).at(-1)).toBe('queue.command.failed');
      });

      it('evicts the oldest letter when the DLQ is full', async () => {
        const engine = await make(
          { lanes: [lane('work', 0)], dlqSize: 2 },
          {
            broken: (payload: number) => {
              throw new Error(`failure ${payload}`);
            },
          },
        );
        await engine.start();
        const handles: CommandHandle[] = [];
        for (const n of [1, 2, 3]) {
          const handle = await engine.submit('work', { type: 'broken', payload: n });
          await rejection(handle.result);
          handles.push(handle);
        }
        const letters = await engine.deadLetters();
        expect(letters.map((l) => l.commandId)).toEqual([handles[1].id, handles[2].id]);
        expect(letters.map((l) => l.payload)).toEqual([2, 3]);
      });

      it('lists letters that failed in the same millisecond oldest first', async () => {
        const engine = await make({ lanes: [lane('work', 0)], dlqSize: 3 }, { broken: () => Promise.reject(new Error('broken')) });
        await engine.start();
        // The clock stands still (timers still run), so every failure has one time; the tie is the
        // engine's to break, and these three ids sort as they were submitted.
        vi.useFakeTimers({ toFake: ['Date'], now: Date.now() });
        try {
          const ids: string[] = [];
          for (const n of [1, 2, 3]) {
            const handle = await engine.submit('work', { type: 'broken', payload: n });
            await rejection(handle.result);
            ids.push(handle.id);
          }
          const letters = await engine.deadLetters();
          expect(new Set(letters.map((l) => l.failedAt)).size).toBe(1);
          expect(letters.map((l) => l.commandId)).toEqual(ids);
        } finally {
          vi.useRealTimers();
        }
      });

      it('resubmits a dead letter to its lane, and deletes one', async () => {
        let broken = true;
        const engine = await make(
          { lanes: [lane('work', 0)], dlqSize: 10 },
          {
            fragile: (payload: string) => {
              if (broken) throw new Error('down');
              return `fixed ${payload}`;
            },
          },
        );
        await engine.start();
        const first = await engine.submit('work', { type: 'fragile', payload: 'one' });
        const second = await engine.submit('work', { type: 'fragile', payload: 'two' });
        await rejection(first.result);
        await rejection(second.result);
        expect(await engine.deadLetters()).toHaveLength(2);

        broken = false;
        const again = await engine.retryDeadLetter(first.id);
        expect(await again.result).toBe('fixed one');
        expect((await engine.deadLetters()).map((l) => l.commandId)).toEqual([second.id]);

        expect(await engine.deleteDeadLetter(second.id)).toBe(true);
        expect(await engine.deleteDeadLetter(second.id)).toBe(false);
        expect(await engine.deadLetters()).toEqual([]);
        await expect(engine.retryDeadLetter('never-there')).rejects.toBeInstanceOf(LaneError);
      });
    });

    describe('E. shutdown, drain and close', () => {
      it('refuses submits after shutdown and announces shutdown once', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { echo });
        const events = record(engine);
        await engine.start();
        await engine.shutdown();
        await engine.shutdown();
        await expectLaneError(
          engine.submit('work', { type: 'echo', payload: 1 }),
          'shutdown_in_progress',
          'Queue is shutting down, not accepting new commands',
        );
        expect(events.filter((e) => e.key === 'queue.shutdown.started')).toHaveLength(1);
      });

      it('finishes queued work after shutdown, and drain waits for it', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { nap: async (n: number) => (await sleep(20), n) });
        await engine.start();
        const handles = await Promise.all([1, 2, 3].map((n) => engine.submit('work', { type: 'nap', payload: n })));
        await engine.shutdown();
        await engine.drain(5_000);
        const metrics = await laneMetrics(engine, 'work');
        expect([metrics.completed, metrics.pending, metrics.active]).toEqual([3, 0, 0]);
        expect(await Promise.all(handles.map((h) => h.result))).toEqual([1, 2, 3]);
      });

      it('drain resolves once a running command completes', async () => {
        let done = false;
        const engine = await make({ lanes: [lane('work', 0)] }, { nap: async () => (await sleep(100), (done = true)) });
        await engine.start();
        const handle = await engine.submit('work', { type: 'nap', payload: null });
        await engine.drain(2_000);
        expect(done).toBe(true);
        expect(await handle.result).toBe(true);
      });

      it('drain rejects with DrainTimeout when work outlasts it', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { stuck: (_payload, ctx) => untilAborted(ctx.signal) });
        await engine.start();
        await engine.submit('work', { type: 'stuck', payload: null });
        await expectLaneError(engine.drain(50), 'drain_timeout');
      });

      it('drain waits for a retry that is sleeping out its delay', async () => {
        let calls = 0;
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(1, 300) })] },
          {
            flaky: () => {
              calls++;
              if (calls === 1) throw new Error('first fails');
              return 'ok';
            },
          },
        );
        const events = record(engine);
        await engine.start();
        const handle = await engine.submit('work', { type: 'flaky', payload: null });
        await waitFor(() => events.some((e) => e.key === 'queue.command.retry'), 'the retry event');
        const sleeping = await laneMetrics(engine, 'work');
        expect([sleeping.pending, sleeping.active, sleeping.delayed]).toEqual([0, 0, 1]);
        await engine.drain(5_000);
        expect(calls).toBe(2);
        expect(await handle.result).toBe('ok');
      });

      it('close rejects pending commands, aborts running ones, announces completion, and is idempotent', async () => {
        const signals: AbortSignal[] = [];
        const engine = await make(
          { lanes: [lane('work', 0)] },
          { hold: (_payload, ctx) => (signals.push(ctx.signal), untilAborted(ctx.signal)) },
        );
        const events = record(engine);
        await engine.start();
        const running = await engine.submit('work', { type: 'hold', payload: null });
        const queued = await engine.submit('work', { type: 'hold', payload: null });
        await waitFor(() => signals.length === 1, 'the first command to start');
        await engine.close();
        await engine.close();
        expect(signals[0].aborted).toBe(true);
        await rejection(running.result);
        await expectLaneError(queued.result, 'cancelled');
        expect(signals).toHaveLength(1);
        expect(events.filter((e) => e.key === 'queue.shutdown.complete')).toHaveLength(1);
        await expectLaneError(engine.submit('work', { type: 'hold', payload: null }), 'shutdown_in_progress');
      });
    });

    describe('F. events', () => {
      it('emits submitted, started and completed with ids, type and attempt', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { echo });
        const events = record(engine);
        await engine.start();
        const handle = await engine.submit('work', { type: 'echo', payload: 1 });
        await handle.result;
        await waitFor(() => events.some((e) => e.key === 'queue.command.completed'), 'completed');
        const byKey = Object.fromEntries(events.map((e) => [e.key, e]));
        expect(events[0].key).toBe('queue.command.submitted');
        expect(byKey['queue.command.submitted'].payload).toMatchObject({ lane_id: 'work', command_id: handle.id, command_type: 'echo' });
        expect(byKey['queue.command.started'].payload).toMatchObject({ lane_id: 'work', command_id: handle.id, command_type: 'echo', attempt: 1 });
        expect(byKey['queue.command.completed'].payload).toMatchObject({ lane_id: 'work', command_id: handle.id, command_type: 'echo', attempt: 1 });
        expect(typeof events[0].timestamp).toBe('number');
      });

      it('emits submitted before start', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { echo });
        const events = record(engine);
        const handle = await engine.submit('work', { type: 'echo', payload: 1 });
        await waitFor(() => events.length > 0, 'an event');
        expect(events.map((e) => e.key)).toEqual(['queue.command.submitted']);
        expect(events[0].payload?.command_id).toBe(handle.id);
      });

      it('emits the terminal event before the result settles, in the documented order', async () => {
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(1, 10) })], dlqSize: 10 },
          {
            broken: () => {
              throw new Error('nope');
            },
          },
        );
        const events = record(engine);
        await engine.start();
        const handle = await engine.submit('work', { type: 'broken', payload: null });
        const error = await rejection(handle.result);
        const keys = keysFor(events, handle.id);
        expect(keys).toEqual([
          'queue.command.submitted',
          'queue.command.started',
          'queue.command.retry',
          'queue.command.started',
          'queue.command.dead_lettered',
          'queue.command.failed',
        ]);
        const failed = events.find((e) => e.key === 'queue.command.failed');
        expect(failed?.payload).toMatchObject({ command_type: 'broken', attempt: 2, error: 'nope' });
        expect((error as Error).message).toBe('nope');
      });

      it('delivers only matching events to a filtered subscriber, and nothing after unsubscribe', async () => {
        const engine = await make({ lanes: [lane('work', 0)] }, { echo });
        const completed: LaneEvent[] = [];
        const all: LaneEvent[] = [];
        engine.subscribe((e) => completed.push(e), (e) => e.key === 'queue.command.completed');
        const unsubscribe = engine.subscribe((e) => all.push(e));
        await engine.start();
        await (await engine.submit('work', { type: 'echo', payload: 1 })).result;
        await waitFor(() => completed.length === 1, 'the completed event');
        expect(completed.map((e) => e.key)).toEqual(['queue.command.completed']);
        const seen = all.length;
        expect(seen).toBeGreaterThanOrEqual(3);
        unsubscribe();
        await (await engine.submit('work', { type: 'echo', payload: 2 })).result;
        await waitFor(() => completed.length === 2, 'the second completed event');
        expect(all).toHaveLength(seen);
      });

      it('signals pressure once when pending reaches the threshold, and idle only once it is empty', async () => {
        const slots = gates();
        const engine = await make(
          { lanes: [lane('work', 0, { pressureThreshold: 2 }), lane('calm', 1)] },
          { step: (payload: string) => slots.wait(payload) },
        );
        const events = record(engine);
        const laneEvents = () =>
          events.filter((e) => e.key === 'queue.lane.pressure' || e.key === 'queue.lane.idle').map((e) => [e.key, e.payload?.lane_id]);
        await engine.start();
        const handles = [await engine.submit('work', { type: 'step', payload: 'blocker' })];
        await waitFor(async () => (await laneMetrics(engine, 'work')).active === 1, 'the blocker to start');
        for (const name of ['a', 'b', 'c']) handles.push(await engine.submit('work', { type: 'step', payload: name }));
        handles.push(await engine.submit('calm', { type: 'step', payload: 'calm' }));
        await waitFor(() => laneEvents().length === 1, 'pressure');
        expect((await laneMetrics(engine, 'work')).pressured).toBe(true);

        // Below the threshold but not empty: still pressured (hysteresis).
        slots.open('blocker');
        slots.open('a');
        await waitFor(async () => (await laneMetrics(engine, 'work')).completed === 2, 'two commands to finish');
        await sleep(100);
        expect((await laneMetrics(engine, 'work')).pending).toBe(1);
        expect(laneEvents()).toEqual([['queue.lane.pressure', 'work']]);

        slots.open('b');
        await waitFor(() => laneEvents().length === 2, 'idle');
        expect(laneEvents()).toEqual([
          ['queue.lane.pressure', 'work'],
          ['queue.lane.idle', 'work'],
        ]);
        expect((await laneMetrics(engine, 'work')).pressured).toBe(false);
        slots.open('c');
        slots.open('calm');
        await Promise.all(handles.map((h) => h.result));
      });
    });

    describe('G. rate limit and boost under the scheduler', () => {
      it('allows a burst of maxCommands, then spaces commands at the refill rate; idling burns no tokens', async () => {
        const startedAt: number[] = [];
        const engine = await make(
          { lanes: [lane('limited', 0, { maxConcurrency: 10, rateLimit: { maxCommands: 2, windowMs: 1_000 } })] },
          { mark: () => startedAt.push(Date.now()) },
        );
        await engine.start();
        await sleep(300); // a3s-lane spent tokens on every pass over an idle lane
        const submittedAt = Date.now();
        const handles = await Promise.all([1, 2, 3].map(() => engine.submit('limited', { type: 'mark', payload: null })));
        await Promise.all(handles.map((h) => h.result));
        expect(startedAt[1] - submittedAt).toBeLessThan(250);
        expect(startedAt[2] - startedAt[0]).toBeGreaterThanOrEqual(400);
      });

      it('lets a lower lane run while a higher one waits for a token', async () => {
        const order: string[] = [];
        const engine = await make(
          {
            lanes: [lane('limited', 0, { rateLimit: { maxCommands: 1, windowMs: 10_000 } }), lane('free', 1)],
            globalConcurrency: 1,
          },
          { mark: (payload: string) => order.push(payload) },
        );
        await engine.submit('limited', { type: 'mark', payload: 'limited-1' });
        const second = await engine.submit('limited', { type: 'mark', payload: 'limited-2' });
        const free = await engine.submit('free', { type: 'mark', payload: 'free' });
        await engine.start();
        await free.result;
        expect(order).toEqual(['limited-1', 'free']);
        expect((await laneMetrics(engine, 'limited')).pending).toBe(1);
        expect(await engine.cancel(second.id)).toBe('pending');
      });

      for (const boosted of [false, true]) {
        it(`${boosted ? 'lets a boosted lane overtake' : 'without a boost, starves'} a busier higher lane`, async () => {
          const order: string[] = [];
          const slots = gates();
          const engine = await make(
            {
              lanes: [lane('high', 1), lane('low', 5, boosted ? { boost: { deadlineMs: 300, intervals: [[150, 2]] } } : {})],
              globalConcurrency: 1,
            },
            {
              step: async (payload: string) => {
                order.push(payload);
                if (payload === 'blocker') await slots.wait('blocker');
              },
            },
          );
          await engine.start();
          await engine.submit('high', { type: 'step', payload: 'blocker' });
          await waitFor(() => order.length === 1, 'the blocker to start');
          const low = await engine.submit('low', { type: 'step', payload: 'low' });
          for (const n of [1, 2, 3]) await engine.submit('high', { type: 'step', payload: `high-${n}` });
          await sleep(500); // the low command's head is now past its 300 ms deadline
          slots.open('blocker');
          await low.result;
          await engine.drain(5_000);
          expect(order).toEqual(
            boosted
              ? ['blocker', 'low', 'high-1', 'high-2', 'high-3']
              : ['blocker', 'high-1', 'high-2', 'high-3', 'low'],
          );
        });
      }
    });

    describe('scheduling rules a3s-lane never tested', () => {
      it('runs lanes in priority order: reverse submits to session, query, control, system', async () => {
        const order: string[] = [];
        const engine = await make({ lanes: [...DEFAULT_LANES], globalConcurrency: 1 }, { mark: (p: string) => order.push(p) });
        const handles = [];
        for (const id of ['session', 'query', 'control', 'system']) handles.push(await engine.submit(id, { type: 'mark', payload: id }));
        await engine.start();
        await Promise.all(handles.map((h) => h.result));
        expect(order).toEqual(['system', 'control', 'query', 'session']);
      });

      it('runs all of a higher lane queued before start before a lower lane', async () => {
        const order: string[] = [];
        // Registered lowest first, so that registration order cannot pass for priority order.
        const engine = await make({ lanes: [lane('low', 1), lane('high', 0)], globalConcurrency: 1 }, { mark: (p: string) => order.push(p) });
        const handles = [];
        for (const n of [1, 2, 3]) {
          handles.push(await engine.submit('low', { type: 'mark', payload: `low-${n}` }));
          handles.push(await engine.submit('high', { type: 'mark', payload: `high-${n}` }));
        }
        await engine.start();
        await Promise.all(handles.map((h) => h.result));
        expect(order).toEqual(['high-1', 'high-2', 'high-3', 'low-1', 'low-2', 'low-3']);
      });

      it('keeps FIFO order within a lane', async () => {
        const order: number[] = [];
        const engine = await make({ lanes: [lane('work', 0)] }, { mark: (n: number) => order.push(n) });
        const handles = [];
        for (let n = 0; n < 10; n++) handles.push(await engine.submit('work', { type: 'mark', payload: n }));
        await engine.start();
        await Promise.all(handles.map((h) => h.result));
        expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      });

      it('never runs more than maxConcurrency of a lane at once, and does reach it', async () => {
        const tracker = concurrency();
        const engine = await make({ lanes: [lane('work', 0, { maxConcurrency: 3 })] }, { nap: () => tracker.run(() => sleep(30)) });
        await engine.start();
        await engine.start(); // a second start must not add a second dispatcher
        const handles = [];
        for (let n = 0; n < 12; n++) handles.push(await engine.submit('work', { type: 'nap', payload: n }));
        await Promise.all(handles.map((h) => h.result));
        expect(tracker.stats.max).toBe(3);
      });

      it('gives the slot to a lower lane while a higher lane is at capacity', async () => {
        const order: string[] = [];
        const slots = gates();
        const engine = await make(
          { lanes: [lane('system', 0), lane('prompt', 5)] },
          {
            step: async (payload: string) => {
              order.push(payload);
              if (payload === 'system-1') await slots.wait('system-1');
            },
          },
        );
        const first = await engine.submit('system', { type: 'step', payload: 'system-1' });
        const second = await engine.submit('system', { type: 'step', payload: 'system-2' });
        const prompt = await engine.submit('prompt', { type: 'step', payload: 'prompt' });
        await engine.start();
        await prompt.result;
        expect(order).toEqual(['system-1', 'prompt']);
        slots.open('system-1');
        await Promise.all([first.result, second.result]);
        expect(order).toEqual(['system-1', 'prompt', 'system-2']);
      });

      for (const minConcurrency of [1, 0]) {
        it(`under a global cap, ${minConcurrency ? 'reserves a slot for' : 'gives no slot to'} a lower lane with minConcurrency ${minConcurrency}`, async () => {
          const order: string[] = [];
          const slots = gates();
          const engine = await make(
            {
              lanes: [lane('high', 0, { maxConcurrency: 2 }), lane('low', 1, { minConcurrency, maxConcurrency: 2 })],
              globalConcurrency: 2,
            },
            {
              step: async (payload: string) => {
                order.push(payload);
                await slots.wait(payload);
              },
            },
          );
          const handles = [];
          for (const n of [1, 2, 3]) handles.push(await engine.submit('high', { type: 'step', payload: `high-${n}` }));
          handles.push(await engine.submit('low', { type: 'step', payload: 'low-1' }));
          await engine.start();
          await waitFor(() => order.length === 2, 'two commands to start');
          await sleep(50);
          expect(order.sort()).toEqual(minConcurrency ? ['high-1', 'low-1'] : ['high-1', 'high-2']);
          for (const name of ['high-1', 'high-2', 'high-3', 'low-1']) slots.open(name);
          await Promise.all(handles.map((h) => h.result));
        });
      }

      it('lends the reservation of an idle lane to busy ones', async () => {
        const tracker = concurrency();
        const engine = await make(
          {
            lanes: [lane('high', 0, { maxConcurrency: 2 }), lane('idle', 1, { minConcurrency: 1, maxConcurrency: 2 })],
            globalConcurrency: 2,
          },
          { nap: () => tracker.run(() => sleep(50)) },
        );
        await engine.start();
        const handles = [];
        for (let n = 0; n < 6; n++) handles.push(await engine.submit('high', { type: 'nap', payload: n }));
        await Promise.all(handles.map((h) => h.result));
        expect(tracker.stats.max).toBe(2);
      });

      it('releases the slot of a handler that throws or rejects', async () => {
        const engine = await make(
          { lanes: [lane('work', 0)] },
          {
            throws: () => {
              throw new Error('sync boom');
            },
            rejects: async () => {
              throw new Error('async boom');
            },
            echo,
          },
        );
        await engine.start();
        const a = await engine.submit('work', { type: 'throws', payload: null });
        const b = await engine.submit('work', { type: 'rejects', payload: null });
        const c = await engine.submit('work', { type: 'echo', payload: 'still runs' });
        expect(((await rejection(a.result)) as Error).message).toBe('sync boom');
        expect(((await rejection(b.result)) as Error).message).toBe('async boom');
        expect(await c.result).toBe('still runs');
        const metrics = await laneMetrics(engine, 'work');
        expect([metrics.active, metrics.failed, metrics.completed]).toEqual([0, 2, 1]);
        await engine.drain(1_000);
      });
    });

    describe('cancel, backpressure, pause', () => {
      it('cancels a pending command: removed, result rejects Cancelled, never runs', async () => {
        const ran: string[] = [];
        const slots = gates();
        const engine = await make(
          { lanes: [lane('work', 0)] },
          { step: async (payload: string) => (ran.push(payload), await slots.wait(payload)) },
        );
        const events = record(engine);
        await engine.start();
        const first = await engine.submit('work', { type: 'step', payload: 'first' });
        const victim = await engine.submit('work', { type: 'step', payload: 'victim' });
        const last = await engine.submit('work', { type: 'step', payload: 'last' });
        await waitFor(() => ran.length === 1, 'the first command to start');
        expect(await engine.cancel(victim.id, 'changed my mind')).toBe('pending');
        await expectLaneError(victim.result, 'cancelled');
        expect(await engine.cancel(victim.id)).toBe('unknown');
        expect(keysFor(events, victim.id)).toEqual(['queue.command.submitted', 'queue.command.cancelled']);
        slots.open('first');
        slots.open('last');
        await Promise.all([first.result, last.result]);
        expect(ran).toEqual(['first', 'last']);
        const metrics = await laneMetrics(engine, 'work');
        expect([metrics.cancelled, metrics.completed, metrics.pending]).toEqual([1, 2, 0]);
      });

      it('cancels an active command by aborting its signal, and does not retry it', async () => {
        const contexts: CommandContext[] = [];
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(3, 10) })] },
          { hold: (_payload, ctx) => (contexts.push(ctx), untilAborted(ctx.signal)) },
        );
        await engine.start();
        const handle = await engine.submit('work', { type: 'hold', payload: null });
        await waitFor(() => contexts.length === 1, 'the command to start');
        expect(await engine.cancel(handle.id, 'stop')).toBe('active');
        const error = await rejection(handle.result);
        expect(contexts[0].signal.aborted).toBe(true);
        expect(error).toBe(contexts[0].signal.reason);
        await engine.drain(2_000);
        expect(contexts).toHaveLength(1);
        expect(await engine.cancel('no-such-command')).toBe('unknown');
      });

      it('refuses a submit beyond maxPending with QueueFull', async () => {
        const engine = await make({ lanes: [lane('small', 0, { maxPending: 2 }), lane('other', 1)] }, { echo });
        await engine.submit('small', { type: 'echo', payload: 1 });
        await engine.submit('small', { type: 'echo', payload: 2 });
        await expectLaneError(engine.submit('small', { type: 'echo', payload: 3 }), 'queue_full');
        await engine.submit('other', { type: 'echo', payload: 4 });
        expect((await laneMetrics(engine, 'small')).pending).toBe(2);
      });

      it('holds a paused lane while other lanes run, and resumes it', async () => {
        const engine = await make({ lanes: [lane('paused', 0), lane('open', 1)] }, { echo });
        await engine.start();
        await engine.pause('paused');
        const held = await engine.submit('paused', { type: 'echo', payload: 'held' });
        const other = await engine.submit('open', { type: 'echo', payload: 'other' });
        expect(await other.result).toBe('other');
        await sleep(100);
        const metrics = await laneMetrics(engine, 'paused');
        expect([metrics.paused, metrics.pending, metrics.completed]).toEqual([true, 1, 0]);
        await engine.resume('paused');
        expect(await held.result).toBe('held');
        expect((await laneMetrics(engine, 'paused')).paused).toBe(false);
        await expectLaneError(engine.pause('nope'), 'lane_not_found');
      });
    });

    describe('metrics', () => {
      it('counts every outcome per lane and summarises latency and wait', async () => {
        const slots = gates();
        const engine = await make(
          { lanes: [lane('work', 0, { retry: retry.fixed(1, 10) }), lane('other', 1)], dlqSize: 10 },
          {
            ok: async () => {
              await sleep(20);
              return 'ok';
            },
            broken: () => {
              throw new Error('broken');
            },
            hold: () => slots.wait('hold'),
          },
        );
        await engine.start();
        const blocker = await engine.submit('work', { type: 'hold', payload: null });
        const victim = await engine.submit('work', { type: 'ok', payload: null });
        await engine.cancel(victim.id);
        slots.open('hold');
        const handles = [
          await engine.submit('work', { type: 'ok', payload: null }),
          await engine.submit('work', { type: 'ok', payload: null }),
          await engine.submit('work', { type: 'broken', payload: null }),
        ];
        await Promise.allSettled([blocker.result, victim.result, ...handles.map((h) => h.result)]);
        await engine.drain(5_000);
        const work = await laneMetrics(engine, 'work');
        expect(work).toMatchObject({
          id: 'work',
          priority: 0,
          pending: 0,
          active: 0,
          delayed: 0,
          paused: false,
          submitted: 5,
          completed: 3,
          failed: 1,
          timeout: 0,
          retried: 1,
          deadLettered: 1,
          cancelled: 1,
        });
        expect(work.latencyMs.count).toBe(3);
        expect(work.latencyMs.p50).toBeGreaterThanOrEqual(15);
        expect(work.latencyMs.p99).toBeGreaterThanOrEqual(work.latencyMs.p50);
        expect(work.waitMs.count).toBe(5); // blocker, two ok, and both attempts of broken
        expect((await laneMetrics(engine, 'other')).submitted).toBe(0);
      });
    });
  });
}
