/**
 * What the request-path benchmarks share: an `asm serve` process as an operator runs it, built and
 * started as `npm start` does (`node dist/cli/main.js`, not through tsx, whose loader adds a thread
 * and ~35 MB to the process and so to the fork of every spawn; bench/RESULTS.md issue 14), embedded
 * or on a private redis-server, one tenant whose quotas and session limit are out of the way (the
 * benches measure the service, not its limits), and small helpers for medians and the machine.
 * The server writes its log to a file, as an operator's would go to a file or a collector: read
 * from a pipe by the bench's own process, it took the load generator's CPU in ASM's turns only, and
 * more in each round as the kept output grew (bench/RESULTS.md, fifteenth pass).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/ports.js';
import { startRedisServer } from '../test/helpers/redis-server.js';
import { BUILT_ENTRY, serveProcess, untilServing, type ServeProcess } from '../test/helpers/processes.js';
import type { Redis } from 'ioredis';
import WebSocket from 'ws';

export const KEY = 'bench-key';
export const AUTH = { authorization: `Bearer ${KEY}` };
export type Mode = 'embedded' | 'redis';

export const round = (value: number, digits = 1) => Number(value.toFixed(digits));
export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
/** `--name N` in `args`, a whole number of at least `min`, or `fallback` when absent; anything else is refused. */
export function numberFlag(args: string[], name: string, fallback: number, min = 1): number {
  const at = args.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isInteger(value) || value < min) throw new Error(`--${name}: a whole number of at least ${min}, not ${args[at + 1]}`);
  return value;
}
/** /proc/<pid>/stat counts CPU time in clock ticks, 100 a second on Linux. */
const TICK_MS = 10;

/** CPU time the process `pid` has used so far (user and system, its own threads, not its children), in ms: fields 14 and 15 of /proc/<pid>/stat. */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

/** redis-server's CPU time so far (user + system), in ms, from INFO through `admin`. */
export async function redisCpuMs(admin: Redis): Promise<number> {
  const info = await admin.info('cpu');
  const seconds = (name: string) => Number(new RegExp(`^used_cpu_${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  return (seconds('sys') + seconds('user')) * 1000;
}

/**
 * The time an ASM server has spent in garbage collection so far, every kind, in ms: the sum of its
 * `nodejs_gc_duration_seconds` histogram on GET /metrics (the bench's tenant is an admin).
 */
export async function gcMs(asm: AsmServer): Promise<number> {
  const response = await fetch(`${asm.url}/metrics`, { headers: AUTH });
  if (!response.ok) throw new Error(`GET /metrics: ${response.status}`);
  let seconds = 0;
  for (const match of (await response.text()).matchAll(/^nodejs_gc_duration_seconds_sum\{[^}]*\} ([\d.e+-]+)$/gm)) seconds += Number(match[1]);
  return seconds * 1000;
}

/**
 * The bench's own ASM_SPAWNER, for the service it starts (src/backends/spawn-child.ts): a before and
 * after of native/spawn.c, `ASM_SPAWNER=fork npm run bench -- …`.
 */
export const SPAWNER_ENV: Record<string, string> = process.env.ASM_SPAWNER ? { ASM_SPAWNER: process.env.ASM_SPAWNER } : {};

export const logger = (bench: string) => (message: string) => process.stderr.write(`[bench ${bench}] ${message}\n`);

export function machine(): Record<string, unknown> {
  const info = cpus();
  return {
    node: process.version,
    cpus: `${info.length} × ${info[0]?.model ?? 'unknown'}`,
    loadavg: loadavg().map((l) => round(l, 2)),
    redis: execFileSync('redis-server', ['-v']).toString().trim().split(' ').slice(0, 3).join(' '),
  };
}

/**
 * Runs `bench` in embedded and in Redis mode (only the one named in `args`, if any) against one private
 * redis-server; the machine before the first mode and each mode's result.
 */
export async function inModes<T>(args: string[], bench: (mode: Mode, redisUrl: string | undefined) => Promise<T>) {
  const only = args.find((a) => a === 'embedded' || a === 'redis') as Mode | undefined;
  const redis = only === 'embedded' ? undefined : await startRedisServer();
  try {
    const before = machine();
    const modes: Partial<Record<Mode, T>> = {};
    for (const mode of ['embedded', 'redis'] as const) {
      if (only && only !== mode) continue;
      modes[mode] = await bench(mode, redis?.url);
    }
    return { machine: before, loadavg_after: machine().loadavg, modes };
  } finally {
    await redis?.dispose();
  }
}

/** `measure` against running servers, which are stopped after it; a failure prints the end of their output first. */
export async function withServers<T>(servers: AsmServer[], measure: () => Promise<T>, log: (message: string) => void): Promise<T> {
  try {
    return await measure();
  } catch (err) {
    for (const server of servers) log(server.process.output().slice(-4000));
    throw err;
  } finally {
    for (const server of servers) await server.stop();
  }
}

export interface AsmServer {
  url: string;
  /** How the server starts its children: posix_spawn or fork (its /readyz). */
  spawner: string;
  process: ServeProcess;
  post(path: string, body: unknown): Promise<any>;
  get(path: string): Promise<any>;
  stop(): Promise<void>;
}

let built: Promise<void> | undefined;

/**
 * ASM_BENCH_ENTRY names another build's `dist/cli/main.js` to serve instead of this tree's, so a change is
 * measured against the build before it, the two runs alternated (bench/RESULTS.md, seventh pass).
 */
export const ENTRY = process.env.ASM_BENCH_ENTRY ? [process.env.ASM_BENCH_ENTRY] : BUILT_ENTRY;

/**
 * A baseline server of a bench: `script` (a file of bench/, run through tsx with `args`), which prints
 * its port on stdout once listening.
 */
export async function startBaseline(script: string, args: string[] = []): Promise<{ url: string; pid: number; stop: () => void }> {
  const path = fileURLToPath(new URL(script, import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', path, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
  return { url: `http://127.0.0.1:${port}`, pid: child.pid!, stop: () => child.kill('SIGKILL') };
}

/** `npm run build`, once per bench process: the benches measure the sources as they are now. */
export function buildOnce(): Promise<void> {
  built ??= new Promise((resolve, reject) =>
    execFile('npm', ['run', '-s', 'build'], { cwd: fileURLToPath(new URL('../', import.meta.url)) }, (err, stdout, stderr) =>
      err ? reject(new Error(`npm run build failed: ${stdout}${stderr}`)) : resolve(),
    ),
  );
  return built;
}

/**
 * `asm serve` in `mode` (redisUrl for redis), the one tenant `bench` holding KEY and granted `providers`, with `env` on top,
 * and the bench's own ASM_SPAWNER where set; `spawner` is the one the server says it uses (/readyz).
 */
export async function startAsm(mode: Mode, redisUrl: string | undefined, env: Record<string, string> = {}, providers = ['shell']): Promise<AsmServer> {
  const dir = mkdtempSync(join(tmpdir(), 'asm-bench-'));
  const tenants = join(dir, 'tenants.json');
  const unbounded = { sessions: 10_000_000, active_runs: 1_000_000, queued_runs: 10_000_000, connections: 100_000 };
  writeFileSync(
    tenants,
    JSON.stringify([{ id: 'bench', role: 'admin', key_sha256: [createHash('sha256').update(KEY).digest('hex')], providers, quotas: unbounded }]),
  );
  await buildOnce();
  const port = await freePort();
  const proc = serveProcess({
    ASM_HOST: '127.0.0.1',
    ASM_PORT: String(port),
    ASM_WORKSPACE_ROOT: dir,
    ASM_TENANTS_FILE: tenants,
    ASM_RATE_LIMIT: '0',
    ASM_MAX_SESSIONS: '10000000',
    ...(mode === 'redis' ? { REDIS_URL: redisUrl!, ASM_REDIS_PREFIX: `bench${port}` } : {}),
    ...SPAWNER_ENV,
    ...env,
  }, [], ENTRY, join(dir, 'asm.log'));
  const url = `http://127.0.0.1:${port}`;
  await untilServing(url, '/readyz', 60_000);
  // After any fallback to fork: what the bench lines report.
  const spawner: string = ((await (await fetch(`${url}/readyz`)).json()) as { checks: { spawner: string } }).checks.spawner;
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(url + path, {
      method,
      headers: { ...AUTH, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const parsed = await response.json();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(parsed)}`);
    return parsed;
  };
  return {
    url,
    spawner,
    process: proc,
    post: (path, body) => call('POST', path, body),
    get: (path) => call('GET', path),
    async stop() {
      if (proc.child.exitCode === null && proc.child.signalCode === null) {
        proc.child.kill('SIGTERM');
        const timer = setTimeout(() => proc.child.kill('SIGKILL'), 10_000);
        await proc.exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Server-side events of a WebSocket on GET /v1/events, each with the monotonic time it arrived (ns). */
export interface EventSocket {
  ready: Promise<void>;
  on(listener: (event: any, arrivedNs: bigint) => void): void;
  close(): void;
}

/** A WebSocket on /v1/events with `query` (session_id, run_id, after …), authenticated as the bench tenant. */
export function openEventSocket(asm: AsmServer, query: Record<string, string>): EventSocket {
  const socket = new WebSocket(`${asm.url.replace('http', 'ws')}/v1/events?${new URLSearchParams(query)}`, { headers: AUTH });
  const listeners: Array<(event: any, arrivedNs: bigint) => void> = [];
  const ready = new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.on('message', (data) => {
      const arrived = process.hrtime.bigint();
      const frame = JSON.parse(String(data));
      if (frame.type === 'subscribed') resolve();
      if (frame.type === 'event') for (const listener of listeners) listener(frame.event, arrived);
    });
  });
  return { ready, on: (listener) => listeners.push(listener), close: () => socket.close() };
}
