/**
 * A Redis-mode record's cost on the client (issue 14): µs of this process's CPU per read and per
 * write of a run record through the Redis store, against ioredis's own commands on the same record
 * (HGETALL with each field's JSON parsed; HSET of every field and its JSON, made once), alternated round by
 * round, 50 at once on one auto-pipelined connection each. On this 2-core machine the client's CPU is
 * what bounds a Redis-mode request (bench/RESULTS.md, thirteenth pass). Beside them, what a round
 * trip costs the client: a GET one at a time against 50 at once (bench/RESULTS.md, fourteenth pass).
 * Prints one JSON line; progress goes to stderr.
 *
 * Usage: npm run bench -- redis-records [--ops N] [--rounds N]
 */
import { Redis } from 'ioredis';
import { performance } from 'node:perf_hooks';
import { createRedisStore } from '../src/store/redis.js';
import type { RunRecord } from '../src/store/types.js';
import { startRedisServer } from '../test/helpers/redis-server.js';
import { runRecord, sessionRecord } from '../test/store/contract.js';
import { logger, machine, median, numberFlag, round } from './asm-server.js';

const log = logger('redis-records');
const CONCURRENCY = 50;

interface Sample {
  cpuUs: number;
  opsPerS: number;
}

/** `ops` calls of `op`, `concurrency` at once: this process's CPU per call and the calls a second. */
async function sample(ops: number, op: () => Promise<unknown>, concurrency = CONCURRENCY): Promise<Sample> {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  let issued = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (issued++ < ops) await op();
    }),
  );
  const cpu = process.cpuUsage(cpuBefore);
  return { cpuUs: (cpu.user + cpu.system) / ops, opsPerS: (ops * 1000) / (performance.now() - started) };
}

export async function run(args: string[]): Promise<void> {
  const ops = numberFlag(args, 'ops', 20_000);
  const rounds = numberFlag(args, 'rounds', 5);
  const redis = await startRedisServer();
  const prefix = 'bench-records';
  const store = await createRedisStore({ url: redis.url, prefix, eventsPerSession: 1000 });
  const raw = new Redis(redis.url, { enableAutoPipelining: true });
  try {
    // A run as `bench -- http` submits it: a shell session's queued run of `true`.
    const run: RunRecord = runRecord(sessionRecord({ tenant: 'bench' }), { prompt: 'true', metadata: { ticket: 'T-1' } });
    await store.runs.create(run);
    const rawKey = `${prefix}-raw:{${run.id}}:run`;
    /** A short string, for what a round trip costs apart from what it carries. */
    const shortKey = `${prefix}-raw:{${run.id}}:short`;
    const fields = Object.entries(run).flatMap(([field, value]) => [field, JSON.stringify(value)]);
    await raw.hset(rawKey, ...fields);
    const sides = {
      store_read: () => store.runs.get(run.id),
      raw_read: async () => {
        const hash = await raw.hgetall(rawKey);
        const record: Record<string, unknown> = {};
        for (const field of Object.keys(hash)) record[field] = JSON.parse(hash[field]!);
        return record;
      },
      store_write: () => store.runs.update(run.id, { metadata: { ticket: 'T-1' } }),
      // The fields' JSON made once: the baseline is ioredis's HSET alone, the store's write pays its encode.
      raw_write: () => raw.hset(rawKey, ...fields),
      // What a round trip costs apart from what it carries: a GET of a short string, one at a time
      // (each its own write and read) against CONCURRENCY at once (auto-pipelined together).
      get_one_at_a_time: () => raw.get(shortKey),
      get_together: () => raw.get(shortKey),
    };
    const concurrencyOf = (side: Side) => (side === 'get_one_at_a_time' ? 1 : CONCURRENCY);
    await raw.set(shortKey, 'v');
    type Side = keyof typeof sides;
    const samples = Object.fromEntries(Object.keys(sides).map((side) => [side, [] as Sample[]])) as Record<Side, Sample[]>;
    for (const side of Object.keys(sides) as Side[]) await sample(2_000, sides[side], concurrencyOf(side)); // JIT warm-up, unrecorded
    for (let r = 0; r < rounds; r++) {
      // Alternated: each round swaps which of a pair goes first.
      const order: Side[] =
        r % 2 === 0
          ? ['store_read', 'raw_read', 'raw_write', 'store_write', 'get_one_at_a_time', 'get_together']
          : ['raw_read', 'store_read', 'store_write', 'raw_write', 'get_together', 'get_one_at_a_time'];
      for (const side of order) {
        // One at a time takes a round trip a call: a tenth as many keep a round short.
        const s = await sample(side === 'get_one_at_a_time' ? Math.ceil(ops / 10) : ops, sides[side], concurrencyOf(side));
        samples[side].push(s);
        log(`round ${r + 1} ${side}: ${round(s.cpuUs, 1)} µs CPU a call, ${Math.round(s.opsPerS)}/s`);
      }
    }
    const summary = (side: Side) => ({
      cpu_us: round(median(samples[side].map((s) => s.cpuUs)), 1),
      ops_per_s: Math.round(median(samples[side].map((s) => s.opsPerS))),
      rounds_cpu_us: samples[side].map((s) => round(s.cpuUs, 1)),
    });
    const result = {
      bench: 'redis-records',
      date: new Date().toISOString(),
      machine: machine(),
      ops,
      rounds,
      concurrency: CONCURRENCY,
      fields: Object.keys(run).length,
      read: { store: summary('store_read'), raw_hgetall: summary('raw_read'), cpu_ratio: round(median(samples.store_read.map((s) => s.cpuUs)) / median(samples.raw_read.map((s) => s.cpuUs)), 2) },
      // The store's write is an update (merge and answer the record); the raw one an HSET of every field.
      write: { store: summary('store_write'), raw_hset: summary('raw_write'), cpu_ratio: round(median(samples.store_write.map((s) => s.cpuUs)) / median(samples.raw_write.map((s) => s.cpuUs)), 2) },
      round_trip: {
        get_one_at_a_time: summary('get_one_at_a_time'),
        get_together: summary('get_together'),
        cpu_ratio: round(median(samples.get_one_at_a_time.map((s) => s.cpuUs)) / median(samples.get_together.map((s) => s.cpuUs)), 2),
      },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    raw.disconnect();
    await store.close();
    await redis.dispose();
  }
}
