/**
 * Spawn-helper benchmark (issue 14, run path): whether spawning CLIs from a small helper process,
 * instead of from the server's own main thread, would make a run cheaper. A `sh -c true` spawned
 * directly (in its own process group, stdout and stderr piped, until `close`, as the core lane spawns)
 * against the same spawned by a forked helper on request over IPC, its exit reported back; from a
 * parent holding `--mb` MB of small objects (the server idles at 135 MB), and with `--asm` having
 * loaded the service's built modules as `asm serve` has. Alternated: p50 of the sequential spawns,
 * and spawns/s with 16 at once. Also the p50 of `spawn()`'s own synchronous part (the fork, and the
 * wait for the child's exec) and the parent's memory a fork copies: its anonymous memory outside the
 * areas marked not to be copied (V8 marks its heap so, `MADV_DONTFORK`), from /proc/self/smaps.
 * Prints one JSON line.
 *
 * Usage: npm run bench -- spawn-helper [--quick] [--mb N] [--asm]
 */
import { fork, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { buildOnce, machine, median, numberFlag, round } from './asm-server.js';

const HELPER = `
const { spawn } = require('node:child_process');
process.on('message', ({ id }) => {
  const child = spawn('/bin/sh', ['-c', 'true'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.stdout.resume();
  child.stderr.resume();
  child.on('close', (code) => process.send({ id, code }));
});`;

/** Durations of direct()'s synchronous spawn() calls, ms. */
const spawnCalls: number[] = [];

function direct(): Promise<void> {
  return new Promise((resolve, reject) => {
    const called = performance.now();
    const child = spawn('/bin/sh', ['-c', 'true'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    spawnCalls.push(performance.now() - called);
    child.stdout.resume();
    child.stderr.resume();
    child.on('error', reject);
    child.on('close', () => resolve());
  });
}

/** MB of this process's anonymous memory that a fork copies: every mapping's but those flagged `dc` (do not copy). */
function copiedOnForkMb(): number {
  let kb = 0;
  let anonymous = 0;
  // Each mapping's lines end with its VmFlags; its Anonymous size comes before.
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (line.startsWith('Anonymous:')) anonymous = Number(line.split(/\s+/)[1]);
    else if (line.startsWith('VmFlags:') && !line.split(/\s+/).includes('dc')) kb += anonymous;
  }
  return round(kb / 1024);
}

function startHelper() {
  const helper = fork('-e', [HELPER], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map<number, () => void>();
  let next = 0;
  helper.on('message', (message: { id: number }) => {
    waiting.get(message.id)?.();
    waiting.delete(message.id);
  });
  return {
    spawn: () => new Promise<void>((resolve) => {
      const id = next++;
      waiting.set(id, resolve);
      helper.send({ id });
    }),
    stop: () => helper.kill(),
  };
}

async function p50(once: () => Promise<void>, count: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await once();
    samples.push(performance.now() - started);
  }
  return median(samples);
}

async function perSecond(once: () => Promise<void>, seconds: number): Promise<number> {
  let done = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (performance.now() < until) {
      await once();
      done++;
    }
  }));
  return done / ((performance.now() - started) / 1000);
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const mb = numberFlag(args, 'mb', 135, 0);
  const asm = args.includes('--asm');
  // The modules `asm serve` loads, built as `npm start` runs them; the service is not started.
  if (asm) {
    await buildOnce();
    await import(new URL('../dist/app.js', import.meta.url).href);
  }
  // Held for the whole run: the parent's memory, which a fork copies the page tables of.
  const ballast = Array.from({ length: mb * 6_000 }, (_, i) => ({ i, name: `object-${i}`, list: [i] }));
  const helper = startHelper();
  const sides = { direct, helper: helper.spawn };
  const rounds = quick ? 1 : 3;
  const latency: Record<string, number[]> = { direct: [], helper: [] };
  const rate: Record<string, number[]> = { direct: [], helper: [] };
  try {
    for (const once of Object.values(sides)) await p50(once, 20);
    spawnCalls.length = 0;
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (['direct', 'helper'] as const) : (['helper', 'direct'] as const);
      for (const side of order) latency[side]!.push(await p50(sides[side], quick ? 50 : 150));
      for (const side of order) rate[side]!.push(await perSecond(sides[side], quick ? 1 : 2));
    }
  } finally {
    helper.stop();
  }
  const line = {
    bench: 'spawn-helper', date: new Date().toISOString(), machine: machine(), quick, rounds,
    parent_rss_mb: round(process.memoryUsage().rss / 1e6), ballast_objects: ballast.length, asm_modules_loaded: asm,
    copied_on_fork_mb: copiedOnForkMb(), spawn_call_p50_ms: round(median(spawnCalls), 2),
    p50_ms: { direct: round(median(latency.direct!), 2), helper: round(median(latency.helper!), 2) },
    spawns_per_s_16: { direct: round(median(rate.direct!)), helper: round(median(rate.helper!)) },
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
