/**
 * Start-up benchmark (issue 14): how long a process of the `asm` command takes to be of use, against a
 * bare process of the same kind, alternated sample by sample:
 * - `asm serve`, embedded and in Redis mode (a private redis-server), from its spawn to its "ASM is
 *   serving" line, with its resident memory then; baseline: a bare Fastify server (node, fastify, one
 *   route) from its spawn to its listening line. A restart after a crash or a deploy waits this long.
 * - `asm help`, from its spawn to its exit; baseline: `node -e ""`.
 * Both run the built entry as `npm start` does (ASM_BENCH_ENTRY another build's, for a before/after).
 * Prints one JSON line; progress goes to stderr.
 *
 * Usage: npm run bench -- startup [--samples N]   (default 7)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/ports.js';
import { startRedisServer } from '../test/helpers/redis-server.js';
import { buildOnce, ENTRY, logger, machine, median, numberFlag, round } from './asm-server.js';

const log = logger('startup');
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BARE_SERVER = `import('fastify').then(async ({ default: Fastify }) => { const app = Fastify(); app.get('/healthz', async () => ({ status: 'ok' })); await app.listen({ host: '127.0.0.1', port: 0 }); console.log('listening'); })`;

interface Sample {
  ms: number;
  /** A server's resident memory when it was ready, MB. */
  mb?: number;
}

/** VmRSS of /proc/PID/status, in MB. */
function residentMb(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;
}

/** `node ARGS`, timed from its spawn: until a line of its stdout matches `ready` (it is then killed), or without `ready` until it exits 0. */
function timeProcess(args: string[], env: Record<string, string>, ready?: RegExp): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let sample: Sample | undefined;
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    if (ready) {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (sample || !ready.test(line)) return;
        sample = { ms: performance.now() - started, mb: residentMb(child.pid!) };
        child.kill('SIGKILL');
      });
    } else {
      child.stdout!.resume();
    }
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (ready) return sample ? resolve(sample) : reject(new Error(`node ${args.join(' ')} exited (${code ?? signal}) before it was ready: ${stderr}`));
      if (code !== 0) return reject(new Error(`node ${args.join(' ')} exited ${code}: ${stderr}`));
      resolve({ ms: performance.now() - started });
    });
  });
}

function summary(samples: Sample[]) {
  const ms = samples.map((sample) => sample.ms);
  const mb = samples.flatMap((sample) => (sample.mb === undefined ? [] : [sample.mb]));
  return { ms: round(median(ms)), min_ms: round(Math.min(...ms)), max_ms: round(Math.max(...ms)), ...(mb.length > 0 && { rss_mb: round(median(mb)) }) };
}

export async function run(args: string[]): Promise<void> {
  const samples = numberFlag(args, 'samples', 7);
  await buildOnce();
  const redis = await startRedisServer();
  const workspace = mkdtempSync(join(tmpdir(), 'asm-bench-startup-'));
  try {
    const before = machine();
    let redisStarts = 0;
    const serve = async (extra: Record<string, string>) =>
      timeProcess([...ENTRY, 'serve'], { ASM_HOST: '127.0.0.1', ASM_PORT: String(await freePort()), ASM_WORKSPACE_ROOT: workspace, ASM_LOG_LEVEL: 'info', ...extra }, /"ASM is serving"/);
    const kinds: Record<string, () => Promise<Sample>> = {
      bare_server: () => timeProcess(['-e', BARE_SERVER], {}, /^listening$/),
      serve_embedded: () => serve({}),
      // A prefix of its own each start, so that no start finds an earlier one's state.
      serve_redis: () => serve({ REDIS_URL: redis.url, ASM_REDIS_PREFIX: `startup${++redisStarts}` }),
      bare_node: () => timeProcess(['-e', ''], {}),
      help: () => timeProcess([...ENTRY, 'help'], {}),
    };
    const measured: Record<string, Sample[]> = Object.fromEntries(Object.keys(kinds).map((kind) => [kind, []]));
    for (const kind of Object.keys(kinds)) await kinds[kind]!(); // warm the page cache, unrecorded
    for (let i = 0; i < samples; i++) {
      for (const [kind, measure] of Object.entries(kinds)) measured[kind]!.push(await measure());
      log(`sample ${i + 1}/${samples}: ${Object.entries(measured).map(([kind, list]) => `${kind} ${round(list.at(-1)!.ms)} ms`).join(', ')}`);
    }
    const result = Object.fromEntries(Object.entries(measured).map(([kind, list]) => [kind, summary(list)]));
    const ratio = (a: string, b: string) => round(result[a]!.ms / result[b]!.ms, 2);
    process.stdout.write(
      `${JSON.stringify({
        bench: 'startup',
        date: new Date().toISOString(),
        machine: before,
        loadavg_after: machine().loadavg,
        entry: ENTRY.join(' '),
        samples,
        ...result,
        serve_embedded_over_bare_server: ratio('serve_embedded', 'bare_server'),
        serve_redis_over_bare_server: ratio('serve_redis', 'bare_server'),
        help_over_bare_node: ratio('help', 'bare_node'),
      })}\n`,
    );
  } finally {
    rmSync(workspace, { recursive: true, force: true });
    await redis.dispose();
  }
}
