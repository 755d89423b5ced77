/**
 * BullMQ lane engine benchmark, on a private redis-server started for the run (test/helpers). Prints
 * one JSON line on stdout; progress goes to stderr.
 *
 * 1. Throughput: N no-op commands through one lane with maxConcurrency C, against a raw BullMQ
 *    Worker with `concurrency: C` on the same Redis in the same run. Both are fed the same way: N
 *    adds issued without waiting for each other (at most 1000 in flight), and the clock stops when
 *    the last one has completed. Rounds alternate engine and raw; medians are reported.
 * 2. Dispatch latency of the control lane while 10 000 prompt-lane commands wait behind two
 *    running ones: submit → handler start, one control command at a time.
 *
 * Usage: npm run bench -- bullmq [--quick]   (--quick: fewer commands, rounds and samples)
 */
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { execFileSync } from 'node:child_process';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { BullMQLaneEngine } from '../src/lanes/bullmq-engine.js';
import { DEFAULT_LANES, mergeLanes } from '../src/lanes/policies.js';
import { startRedisServer } from '../test/helpers/redis-server.js';
import { logger, median, redisCpuMs, round } from './asm-server.js';

const log = logger('bullmq');
const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
};

/** One round: wall time, and the CPU time this process and redis-server spent in it. */
interface Round {
  ms: number;
  nodeCpuMs: number;
  redisCpuMs: number;
}

/**
 * Times `body` (which returns its own wall time) and measures the CPU both processes spent meanwhile:
 * on a shared machine wall time swings with other work, CPU per command much less.
 */
async function measured(admin: Redis, body: () => Promise<number>): Promise<Round> {
  const redisBefore = await redisCpuMs(admin);
  const nodeBefore = process.cpuUsage();
  const ms = await body();
  const node = process.cpuUsage(nodeBefore);
  return { ms, nodeCpuMs: (node.user + node.system) / 1000, redisCpuMs: (await redisCpuMs(admin)) - redisBefore };
}

/** Runs `count` tasks with at most `window` in flight, in order of index. */
async function windowed(count: number, window: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(window, count) }, async () => {
    while (next < count) await task(next++);
  });
  await Promise.all(lanes);
}

async function engineRound(url: string, prefix: string, commands: number, concurrency: number): Promise<number> {
  const engine = new BullMQLaneEngine({
    lanes: [{ id: 'work', priority: 0, minConcurrency: 0, maxConcurrency: concurrency }],
    connection: url,
    prefix,
  });
  engine.register('noop', () => null);
  await engine.start();
  const started = performance.now();
  const results: Array<Promise<unknown>> = [];
  await windowed(commands, 1000, async (i) => {
    results.push((await engine.submit('work', { type: 'noop', payload: i })).result);
  });
  await Promise.all(results);
  const elapsed = performance.now() - started;
  await engine.close();
  return elapsed;
}

async function rawRound(url: string, prefix: string, commands: number, concurrency: number): Promise<number> {
  const connection = new Redis(url, { maxRetriesPerRequest: null });
  const queue = new Queue('work', { connection, prefix });
  let done = 0;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const worker = new Worker('work', async () => null, { connection, prefix, concurrency });
  worker.on('completed', () => {
    if (++done === commands) finish();
  });
  await worker.waitUntilReady();
  const started = performance.now();
  await windowed(commands, 1000, (i) =>
    queue.add('noop', { payload: i }, { removeOnComplete: true, removeOnFail: true }),
  );
  await finished;
  const elapsed = performance.now() - started;
  await worker.close();
  await queue.close();
  connection.disconnect();
  return elapsed;
}

async function latency(url: string, prefix: string, backlog: number, samples: number) {
  const engine = new BullMQLaneEngine({
    lanes: mergeLanes(DEFAULT_LANES, []),
    connection: url,
    prefix,
  });
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let startedAt = 0;
  engine.register('prompt', () => held);
  engine.register('control', () => {
    startedAt = performance.now();
    return null;
  });
  await engine.start();
  log(`queueing ${backlog} prompt commands`);
  const backlogHandles: Array<Promise<unknown>> = [];
  await windowed(backlog, 1000, async (i) => {
    backlogHandles.push((await engine.submit('prompt', { type: 'prompt', payload: i })).result);
  });
  const pending = (await engine.metrics()).find((lane) => lane.id === 'prompt')!.pending;
  const latencies: number[] = [];
  for (let i = 0; i < samples; i++) {
    const before = performance.now();
    const handle = await engine.submit('control', { type: 'control', payload: i });
    await handle.result;
    latencies.push(startedAt - before);
  }
  release();
  await engine.close();
  return {
    backlog_pending_in_redis: pending,
    samples,
    p50_ms: round(percentile(latencies, 50), 3),
    p99_ms: round(percentile(latencies, 99), 3),
    max_ms: round(Math.max(...latencies), 3),
  };
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const commands = quick ? 2_000 : 20_000;
  const concurrency = 16;
  const rounds = quick ? 1 : 3;
  const server = await startRedisServer();
  try {
    const admin = new Redis(server.url);
    const engineRounds: Round[] = [];
    const rawRounds: Round[] = [];
    const describe = (r: Round) => `${round(r.ms)} ms (CPU: node ${round(r.nodeCpuMs)} ms, redis ${round(r.redisCpuMs)} ms)`;
    for (let round_ = 0; round_ < rounds; round_++) {
      rawRounds.push(await measured(admin, () => rawRound(server.url, `{bench-raw-${round_}}`, commands, concurrency)));
      log(`round ${round_ + 1}: raw worker ${describe(rawRounds.at(-1)!)}`);
      engineRounds.push(await measured(admin, () => engineRound(server.url, `{bench-engine-${round_}}`, commands, concurrency)));
      log(`round ${round_ + 1}: lane engine ${describe(engineRounds.at(-1)!)}`);
    }
    admin.disconnect();
    const engineMs = engineRounds.map((r) => r.ms);
    const rawMs = rawRounds.map((r) => r.ms);
    const engineOps = commands / (median(engineMs) / 1000);
    const rawOps = commands / (median(rawMs) / 1000);
    /** Median CPU per command, in µs, of node, redis-server and both. */
    const cpu = (rs: Round[]) => {
      const us = (ms: number) => round((ms * 1000) / commands);
      return {
        node: us(median(rs.map((r) => r.nodeCpuMs))),
        redis: us(median(rs.map((r) => r.redisCpuMs))),
        total: us(median(rs.map((r) => r.nodeCpuMs + r.redisCpuMs))),
      };
    };
    const engineCpu = cpu(engineRounds);
    const rawCpu = cpu(rawRounds);
    const dispatch = await latency(server.url, '{bench-latency}', 10_000, quick ? 50 : 500);
    log(`control dispatch p50 ${dispatch.p50_ms} ms, p99 ${dispatch.p99_ms} ms`);
    const cpuInfo = cpus();
    const result = {
      bench: 'bullmq',
      date: new Date().toISOString(),
      node: process.version,
      redis: execFileSync('redis-server', ['-v']).toString().trim(),
      cpus: `${cpuInfo.length} × ${cpuInfo[0]?.model ?? 'unknown'}`,
      quick,
      throughput: {
        commands,
        concurrency,
        rounds,
        engine: { median_ms: round(median(engineMs)), ops_per_s: Math.round(engineOps), rounds_ms: engineMs.map((ms) => round(ms)), cpu_us_per_command: engineCpu },
        raw_worker: { median_ms: round(median(rawMs)), ops_per_s: Math.round(rawOps), rounds_ms: rawMs.map((ms) => round(ms)), cpu_us_per_command: rawCpu },
        engine_vs_raw: round(engineOps / rawOps, 2),
        // The same comparison by CPU spent (raw ÷ engine), which other work on the machine sways less.
        engine_vs_raw_cpu: round(rawCpu.total / engineCpu.total, 2),
        target: 0.9,
      },
      control_dispatch_with_prompt_backlog: { ...dispatch, backlog: 10_000, target_p99_ms: 5 },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await server.dispose();
  }
}
