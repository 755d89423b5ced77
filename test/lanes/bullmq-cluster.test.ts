/**
 * Several BullMQ lane engines on one Redis and prefix, as several API processes would be: any
 * engine runs any job, results, cancels and the DLQ cross engines, a job held by a killed process
 * is run again, and a Redis outage makes submits fail fast instead of hanging. Real redis-servers
 * only: the shared one from test/setup/redis.ts, and a private one the outage test stops.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { BullMQLaneEngine, type BullMQEngineOptions } from '../../src/lanes/bullmq-engine.js';
import { retry } from '../../src/lanes/policies.js';
import { LaneError, type CommandHandler, type LaneConfig, type LaneEvent } from '../../src/lanes/types.js';
import { deletePrefix, startRedisServer } from '../helpers/redis-server.js';
import { deferred, rejection, sleep } from './conformance.js';
import { waitFor } from '../helpers/wait.js';

const url = inject('asmTestRedisUrl') ?? process.env.ASM_TEST_REDIS_URL;
if (!url) throw new Error('no test Redis: is test/setup/redis.ts registered as globalSetup?');
const admin = new Redis(url, { maxRetriesPerRequest: null });

/** Rejects if the promise has not settled within `ms`, so that a hang fails with a message. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`not settled within ${ms} ms`)))]);
}

const work = (extra: Partial<LaneConfig> = {}): LaneConfig => ({ id: 'work', priority: 0, minConcurrency: 0, maxConcurrency: 2, ...extra });

let engines: BullMQLaneEngine[] = [];
let prefixes: string[] = [];

afterEach(async () => {
  await Promise.all(engines.map((engine) => engine.close()));
  engines = [];
  for (const prefix of prefixes) await deletePrefix(admin, prefix);
  prefixes = [];
});

afterAll(async () => {
  await admin.quit();
});

function newPrefix(): string {
  const prefix = `{asm-cluster-${randomUUID().slice(0, 8)}}`;
  prefixes.push(prefix);
  return prefix;
}

/** Engines sharing one prefix, each with the same handlers, started. */
async function cluster(
  count: number,
  handlers: (engine: string) => Record<string, CommandHandler>,
  options: Partial<BullMQEngineOptions> = {},
): Promise<BullMQLaneEngine[]> {
  const prefix = newPrefix();
  const made: BullMQLaneEngine[] = [];
  for (let i = 0; i < count; i++) {
    const engine = new BullMQLaneEngine({ lanes: [work()], connection: url!, prefix, ...options });
    for (const [type, handler] of Object.entries(handlers(String.fromCharCode(65 + i)))) engine.register(type, handler);
    engines.push(engine);
    made.push(engine);
  }
  await Promise.all(made.map((engine) => engine.start()));
  return made;
}

/**
 * Two engines with one slot each, whose `step` notes the engine it ran on (by payload) and holds a
 * `blocker` until `gate` resolves.
 */
async function oneSlotPair(): Promise<{ a: BullMQLaneEngine; gate: ReturnType<typeof deferred<void>>; ranOn: Map<string, string> }> {
  const gate = deferred();
  const ranOn = new Map<string, string>();
  const [a] = await cluster(2, (name) => ({
    step: async (payload: string) => {
      ranOn.set(payload, name);
      if (payload === 'blocker') await gate.promise;
      return payload;
    },
  }), { lanes: [work({ maxConcurrency: 1 })] });
  return { a: a!, gate, ranOn };
}

function record(engine: BullMQLaneEngine): LaneEvent[] {
  const events: LaneEvent[] = [];
  engine.subscribe((event) => events.push(event));
  return events;
}

describe('BullMQLaneEngine cluster: engines sharing one Redis and prefix', () => {
  it('settles every result when the other engine wins the race for the submitter’s command', async () => {
    // Bursts of four against two slots and a 2 ms handler: the submitter fetches its next command as
    // soon as a slot frees, while the other engine, told of the burst, may take and finish it first;
    // that outcome can arrive while the submitter's own fetch is still in flight.
    const [a, b] = await cluster(2, (name) => ({
      echo: async (payload: { i: number }) => {
        await sleep(2);
        return { i: payload.i, on: name };
      },
    }));
    const ranOn = new Set<string>();
    for (let burst = 0; burst < 50; burst++) {
      const submitter = burst % 2 ? a : b;
      const ids = [0, 1, 2, 3].map((k) => burst * 4 + k);
      const handles = await Promise.all(ids.map((i) => submitter.submit('work', { type: 'echo', payload: { i } })));
      const values = (await within(Promise.all(handles.map((handle) => handle.result)), 5_000)) as Array<{ i: number; on: string }>;
      expect(values.map((value) => value.i)).toEqual(ids);
      for (const value of values) ranOn.add(`${burst % 2 ? 'A' : 'B'}→${value.on}`);
    }
    // Commands crossed engines both ways, so the race was run.
    expect(ranOn).toContain('A→B');
    expect(ranOn).toContain('B→A');
  });

  it('answers every command of bursts submitted 16 at a time on both engines, leaving no lane a command behind', async () => {
    // A command is registered before its job is added to Redis and queued in its lane after: a fetch
    // by either engine in between (`t` signal, or this engine's own fetch for another slot) took it out
    // of a lane it was not yet in. The lane's count then disagreed with its ring, and a clear at
    // count 0 dropped a live command: it stayed waiting in Redis, one behind (issue 13, finding 6).
    // As many slots as submitters, so the lane's queue is mostly empty, where a miscount shows.
    const [a, b] = await cluster(2, () => ({ echo: (payload: number) => payload }), { lanes: [work({ maxConcurrency: 16 })] });
    for (let burst = 0; burst < 6; burst++) {
      let next = 0;
      const answered: number[] = [];
      const submitter = async (engine: BullMQLaneEngine) => {
        for (let i = next++; i < 2_000; i = next++) {
          const handle = await engine.submit('work', { type: 'echo', payload: i });
          answered.push((await within(handle.result, 15_000)) as number);
        }
      };
      await Promise.all(Array.from({ length: 16 }, (_, k) => submitter(k % 2 ? a : b)));
      expect(answered.sort((x, y) => x - y)).toEqual(Array.from({ length: 2_000 }, (_, i) => i));
    }
    const idle = async () => (await Promise.all([a, b].map((engine) => engine.metrics()))).every(([lane]) => lane!.pending === 0 && lane!.active === 0);
    await waitFor(idle, 'both lanes to be idle', 5_000);
  }, 120_000);

  it('runs a command submitted on A on B while A’s lane is paused; the value reaches A, events come from the executor', async () => {
    const ranOn: string[] = [];
    const [a, b] = await cluster(2, (name) => ({
      double: (payload: { n: number }) => {
        ranOn.push(name);
        return { n: payload.n * 2, on: name };
      },
    }));
    await a.pause('work');
    const aEvents = record(a);
    const bEvents = record(b);
    const handle = await a.submit('work', { type: 'double', payload: { n: 21 } });
    await expect(handle.result).resolves.toEqual({ n: 42, on: 'B' });
    expect(ranOn).toEqual(['B']);
    const keys = (events: LaneEvent[]) => events.filter((e) => e.payload?.command_id === handle.id).map((e) => e.key);
    // A's result may settle (from Redis) just before B has emitted its own completion.
    await waitFor(() => keys(bEvents).includes('queue.command.completed'), 'B to report the completion');
    expect(keys(aEvents)).toEqual(['queue.command.submitted']);
    expect(keys(bEvents)).toEqual(['queue.command.started', 'queue.command.completed']);
    expect((await b.metrics())[0]!.completed).toBe(1);
    expect((await a.metrics())[0]!.completed).toBe(0);
  });

  it('runs A’s overflow on B while A’s lane is full', async () => {
    const { a, gate, ranOn } = await oneSlotPair();
    const blocker = await a.submit('work', { type: 'step', payload: 'blocker' });
    await waitFor(() => ranOn.has('blocker'), 'the blocker to start');
    const blockerEngine = ranOn.get('blocker')!;
    const overflow = await a.submit('work', { type: 'step', payload: 'overflow' });
    // Whichever engine holds the blocker is full; the other one runs the overflow.
    await expect(overflow.result).resolves.toBe('overflow');
    expect(ranOn.get('overflow')).not.toBe(blockerEngine);
    gate.resolve();
    await expect(blocker.result).resolves.toBe('blocker');
  });

  it('rejects A’s result with the error of a terminal failure on B, and both see the dead letter; B retries it', async () => {
    let healed = false;
    const [a, b] = await cluster(2, () => ({
      fragile: (payload: { job: number }) => {
        if (!healed) throw new Error(`broken ${payload.job}`);
        return 'fixed';
      },
    }), { dlqSize: 10 });
    await a.pause('work');
    const handle = await a.submit('work', { type: 'fragile', payload: { job: 7 } });
    const error = await rejection(handle.result);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toBe('broken 7');
    for (const engine of [a, b]) {
      const letters = await engine.deadLetters();
      expect(letters).toHaveLength(1);
      expect(letters[0]).toMatchObject({
        commandId: handle.id,
        commandType: 'fragile',
        laneId: 'work',
        payload: { job: 7 },
        error: 'broken 7',
        attempts: 1,
      });
      expect(letters[0]!.failedAt).toBeGreaterThan(Date.now() - 10_000);
    }
    healed = true;
    const retried = await b.retryDeadLetter(handle.id);
    expect(retried.id).toBe(handle.id);
    await expect(retried.result).resolves.toBe('fixed');
    expect(await a.deadLetters()).toEqual([]);
    expect(await b.deadLetters()).toEqual([]);
  });

  it('retries A’s command on B after its delay, and A’s result gets the retry’s value', async () => {
    const attempts: string[] = [];
    const [a, b] = await cluster(2, (name) => ({
      flaky: (_payload: unknown, ctx) => {
        attempts.push(`${name}${ctx.attempt}`);
        if (ctx.attempt === 1) throw new Error('first attempt fails');
        return ctx.attempt;
      },
    }), { lanes: [work({ retry: retry.fixed(2, 30) })] });
    await a.pause('work');
    const bEvents = record(b);
    const handle = await a.submit('work', { type: 'flaky', payload: null });
    await expect(within(handle.result, 5_000)).resolves.toBe(2);
    expect(attempts).toEqual(['B1', 'B2']);
    expect(bEvents.filter((e) => e.payload?.command_id === handle.id).map((e) => e.key)).toEqual([
      'queue.command.started',
      'queue.command.retry',
      'queue.command.started',
      'queue.command.completed',
    ]);
    expect(await b.drain(1_000)).toBeUndefined(); // B keeps nothing of A's command
  });

  it('keeps a cancelled command out of the DLQ', async () => {
    const [a, b] = await cluster(2, () => ({
      hold: (_payload: unknown, ctx) =>
        new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true })),
    }), { dlqSize: 10 });
    await b.pause('work');
    const handle = await a.submit('work', { type: 'hold', payload: null });
    await waitFor(async () => (await a.metrics())[0]!.active === 1, 'the command to run on A');
    expect(await b.cancel(handle.id)).toBe('unknown'); // running on A: B cannot stop it
    expect(await a.cancel(handle.id, 'user')).toBe('active');
    const error = await rejection(handle.result);
    expect((error as LaneError).code).toBe('cancelled');
    await sleep(50);
    expect(await b.deadLetters()).toEqual([]);
    expect(await admin.zcard(`${prefixes[0]}:work:failed`)).toBe(0);
  });

  it('cancels A’s pending command from B: removed from Redis, A’s result rejects cancelled', async () => {
    const ran: string[] = [];
    const [a, b] = await cluster(2, () => ({ mark: (payload: string) => ran.push(payload) }));
    await a.pause('work');
    await b.pause('work');
    const handle = await a.submit('work', { type: 'mark', payload: 'x' });
    await waitFor(async () => (await b.metrics())[0]!.pending === 1, 'B to see the job pending in Redis');
    expect(await b.cancel(handle.id, 'changed my mind')).toBe('pending');
    const error = await rejection(handle.result);
    expect(error).toBeInstanceOf(LaneError);
    expect((error as LaneError).code).toBe('cancelled');
    expect(await b.cancel(handle.id)).toBe('unknown');
    await a.resume('work');
    await b.resume('work');
    await sleep(100);
    expect(ran).toEqual([]);
    expect((await a.metrics())[0]!.pending).toBe(0);
  });

  it('tells the other engines nothing of a job its submitter fetched at once, and only the outcome of a caller-chosen id', async () => {
    const [a] = await cluster(2, () => ({ echo: (payload: number) => payload }));
    const signals = async (jobId: string) =>
      (await admin.xrange(`${prefixes.at(-1)}::signals`, '-', '+'))
        .flatMap(([, fields]) => JSON.parse(fields[3]!) as unknown[][])
        .filter((signal) => signal.includes(jobId))
        .map((signal) => signal[0]);
    const generated = await a.submit('work', { type: 'echo', payload: 1 });
    const chosen = await a.submit('work', { type: 'echo', payload: 2, id: 'chosen-id' });
    await expect(Promise.all([generated.result, chosen.result])).resolves.toEqual([1, 2]);
    // Engines that submitted a caller-chosen id elsewhere wait for its outcome.
    await waitFor(async () => (await signals('chosen-id')).length > 0, 'the outcome of the caller-chosen id');
    expect(await signals('chosen-id')).toEqual(['c']);
    expect(await signals(generated.id)).toEqual([]);
  });

  it('announces a job its submitter’s fetch did not get, so an idle engine runs it meanwhile', async () => {
    const { a, gate, ranOn } = await oneSlotPair();
    // A job no engine was told of (its signal lost, say) is first in line: A's fetch for its own
    // command gets it, and A's command waits for A's one slot unless the idle engine hears of it.
    const queue = new Queue('work', { connection: admin, prefix: prefixes.at(-1) });
    await queue.add('step', { payload: 'blocker' }, { jobId: 'untold', removeOnComplete: true });
    await queue.close();
    const mine = await a.submit('work', { type: 'step', payload: 'mine' });
    await expect(within(mine.result, 5_000)).resolves.toBe('mine');
    expect(ranOn).toEqual(new Map([['blocker', 'A'], ['mine', 'B']]));
    gate.resolve();
  });

  it('treats a caller-chosen id as one command across engines', async () => {
    let runs = 0;
    const [a, b] = await cluster(2, () => ({ count: () => ++runs }));
    await a.pause('work');
    await b.pause('work');
    const first = await a.submit('work', { type: 'count', payload: null, id: 'shared-id' });
    const second = await b.submit('work', { type: 'count', payload: null, id: 'shared-id' });
    expect(second.id).toBe('shared-id');
    await b.resume('work');
    await expect(first.result).resolves.toBe(1);
    await expect(second.result).resolves.toBe(1);
    await a.resume('work');
    await sleep(100);
    expect(runs).toBe(1);
  });

  it('leaves a job whose type it has no handler for to an engine that has one', async () => {
    const ranOn: string[] = [];
    const [a, b] = await cluster(2, (name): Record<string, CommandHandler> =>
      name === 'A' ? { special: () => ranOn.push('A') && 'special' } : { other: () => 'other' },
    );
    await a.pause('work');
    const handle = await a.submit('work', { type: 'special', payload: null });
    await sleep(100); // B has seen it, fetched it, and given it back
    expect((await b.metrics())[0]!.pending).toBe(1);
    await a.resume('work');
    await expect(handle.result).resolves.toBe('special');
    expect(ranOn).toEqual(['A']);
  });

  it('caps a lane across engines with clusterMaxConcurrency', async () => {
    let running = 0;
    let peak = 0;
    const [a, b] = await cluster(2, () => ({
      nap: async () => {
        running++;
        peak = Math.max(peak, running);
        await sleep(30);
        running--;
      },
    }), { lanes: [work({ maxConcurrency: 3, clusterMaxConcurrency: 2 })] });
    const handles = [];
    for (let n = 0; n < 6; n++) handles.push(await a.submit('work', { type: 'nap', payload: n }));
    for (let n = 0; n < 6; n++) handles.push(await b.submit('work', { type: 'nap', payload: n }));
    await Promise.all(handles.map((handle) => handle.result));
    expect(peak).toBe(2);
  });

  it('runs again, on another engine, a job whose process was killed while running it', async () => {
    const prefix = newPrefix();
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../fixtures/lanes/hold-worker.ts', import.meta.url))], {
      env: { ...process.env, ASM_HOLD_REDIS_URL: url, ASM_HOLD_PREFIX: prefix },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const lines = createInterface({ input: child.stdout! });
      const seen: string[] = [];
      lines.on('line', (line) => seen.push(line));
      await waitFor(() => seen.includes('ready'), 'the worker process to start', 15_000);

      const attempts: number[] = [];
      const b = new BullMQLaneEngine({
        lanes: [work()],
        connection: url!,
        prefix,
        lockDurationMs: 1_000,
        stalledIntervalMs: 300,
      });
      engines.push(b);
      b.register('job', (_payload, ctx) => {
        attempts.push(ctx.attempt);
        return 'recovered';
      });
      await b.start();
      await b.pause('work'); // so that the other process takes the job
      const handle = await b.submit('work', { type: 'job', payload: null, id: 'crash-me' });
      await waitFor(() => seen.includes('running crash-me'), 'the worker process to take the job');
      child.kill('SIGKILL');
      await exited;
      await b.resume('work');
      await expect(handle.result).resolves.toBe('recovered');
      expect(attempts).toEqual([1]);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
  });
});

describe('BullMQLaneEngine while Redis is unavailable', () => {
  it('fails submits with unavailable instead of hanging, leaves nothing half-submitted, and resumes when Redis returns', async () => {
    const server = await startRedisServer();
    const probe = new Redis(server.url, { maxRetriesPerRequest: null });
    probe.on('error', () => {});
    const gate = deferred();
    let started = false;
    let finished = false;
    const engine = new BullMQLaneEngine({ lanes: [work()], connection: server.url, prefix: '{asm-outage}', commandTimeoutMs: 500 });
    engine.register('hold', async () => {
      started = true;
      await gate.promise;
      finished = true;
      return 'held';
    });
    engine.register('echo', (payload) => payload);
    const refused = async (id: string) => {
      const before = Date.now();
      const error = await rejection(engine.submit('work', { type: 'echo', payload: id, id }));
      expect(error).toBeInstanceOf(LaneError);
      expect((error as LaneError).code).toBe('unavailable');
      return Date.now() - before;
    };
    try {
      await engine.start();
      const running = await engine.submit('work', { type: 'hold', payload: null });
      await waitFor(() => started, 'the handler to start');

      // A server that answers nothing: the submit gives up after commandTimeoutMs...
      server.freeze();
      const waited = await refused('during-freeze');
      expect(waited).toBeGreaterThanOrEqual(450);
      expect(waited).toBeLessThan(2_000);
      // ...and the add that Redis carries out once it answers again is undone.
      server.thaw();
      await waitFor(
        async () => (await probe.xrange('{asm-outage}:work:events', '-', '+')).some(([, fields]) => fields.join(' ').startsWith('event removed jobId during-freeze')),
        'the late add to be removed',
      );
      expect(await probe.exists('{asm-outage}:work:during-freeze')).toBe(0);

      // A server that is gone: the submit fails at once; the running handler goes on.
      await server.stop();
      expect(await refused('during-outage')).toBeLessThan(1_000);
      gate.resolve();
      await waitFor(() => finished, 'the running handler to finish');

      await server.start();
      // Its outcome is acknowledged once Redis is back (this server lost its data: the job is gone).
      await expect(within(running.result, 10_000)).resolves.toBe('held');
      await waitFor(async () => {
        try {
          const handle = await engine.submit('work', { type: 'echo', payload: 'back' });
          return (await within(handle.result, 5_000)) === 'back';
        } catch (error) {
          if ((error as LaneError).code === 'unavailable') return false;
          throw error;
        }
      }, 'a submit to run after Redis returned', 15_000);
    } finally {
      await engine.close();
      probe.disconnect();
      await server.dispose();
    }
  }, 40_000);

  it('a submit that gave up does not undo a later submit of the same id: the add that lands late is the later job, and it runs', async () => {
    const server = await startRedisServer();
    const probe = new Redis(server.url, { maxRetriesPerRequest: null });
    probe.on('error', () => {});
    const engine = new BullMQLaneEngine({ lanes: [work()], connection: server.url, prefix: '{asm-late-add}', commandTimeoutMs: 1_000 });
    engine.register('echo', (payload) => payload);
    try {
      await engine.start();
      // Writes held for 1.5 s: the first add waits past its submit's 1 s and is given up; the second,
      // sent at once, lands within its own second, right after the first one's (the same connection).
      await probe.client('PAUSE', 1_500, 'WRITE');
      const gaveUp = await rejection(engine.submit('work', { type: 'echo', payload: 'again', id: 'same-id' }));
      expect((gaveUp as LaneError).code).toBe('unavailable');
      const again = await engine.submit('work', { type: 'echo', payload: 'again', id: 'same-id' });
      await expect(within(again.result, 10_000)).resolves.toBe('again');
    } finally {
      await engine.close();
      probe.disconnect();
      await server.dispose();
    }
  }, 20_000);

  it('a queued command whose job Redis lost is stored again by a later submit of its id, and runs once', async () => {
    const server = await startRedisServer();
    const probe = new Redis(server.url, { maxRetriesPerRequest: null });
    probe.on('error', () => {});
    const prefix = '{asm-lost-job}';
    const engine = new BullMQLaneEngine({ lanes: [work({ maxConcurrency: 1 })], connection: server.url, prefix });
    const gate = deferred();
    let started = false;
    const ran: unknown[] = [];
    engine.register('hold', async () => {
      started = true;
      await gate.promise;
      return 'held';
    });
    engine.register('echo', (payload) => {
      ran.push(payload);
      return payload;
    });
    try {
      await engine.start();
      const holding = await engine.submit('work', { type: 'hold', payload: null });
      await waitFor(() => started, 'the hold to start');
      const first = await engine.submit('work', { type: 'echo', payload: 'lost', id: 'lost' });
      // What an AOF cut does to a job added in the lost second: gone from Redis, still queued here.
      expect(await probe.lrem(`${prefix}:work:wait`, 0, 'lost')).toBe(1);
      expect(await probe.del(`${prefix}:work:lost`)).toBe(1);
      const again = await engine.submit('work', { type: 'echo', payload: 'lost', id: 'lost' });
      expect(again.id).toBe(first.id);
      gate.resolve();
      await expect(within(holding.result, 10_000)).resolves.toBe('held');
      await expect(within(again.result, 10_000)).resolves.toBe('lost');
      await expect(within(first.result, 1_000)).resolves.toBe('lost');
      expect(ran).toEqual(['lost']);
    } finally {
      await engine.close();
      probe.disconnect();
      await server.dispose();
    }
  }, 20_000);
});
