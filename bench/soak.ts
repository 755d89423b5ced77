/**
 * `npm run soak -- --minutes N [--mode embedded|distributed|both]`: mixed load for N minutes per mode
 * (default 1), counted end to end (issue 13, Deliver 5). Shell runs, fake-claude runs with approvals
 * and with interrupts (test/fixtures/bin/fake-claude.mjs), each followed by a WebSocket subscriber that
 * drops its connection every few events and resumes with `after`. Distributed mode runs two API
 * processes and two workers on a private Redis (half the sessions run on the workers, as remote_node
 * runs placed in their pool), and restarts one API process every 30 s (its clients
 * resume on the other). Prints one JSON line per mode; exits 1 if a count does not balance or memory
 * grew past its bound.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { workerProcess, type ServeProcess } from '../test/helpers/processes.js';
import { startRedisServer, type RedisServer } from '../test/helpers/redis-server.js';
import { AUTH, machine, percentile, round, startAsm, type AsmServer } from './asm-server.js';

const FAKE_CLAUDE = new URL('../test/fixtures/bin/fake-claude.mjs', import.meta.url).pathname;
const ACTORS = 6;
const RESTART_EVERY_MS = 30_000;
/**
 * Growth bound per process, start (after warm-up) to end: 64 MB. Every session is closed after its run
 * and each run's output is small, so what a process keeps per run is its stored events and records
 * (embedded) or nothing (Redis holds them); 64 MB is V8's heap slack after a few minutes of churn, far
 * under what keeping every run's buffers would take (hundreds of MB at the rates here).
 */
const RSS_GROWTH_BOUND_MB = 64;
/**
 * Redis keeps every run's events and records (nothing here is old enough to be trimmed), so it grows
 * with the runs, not with time: about 15 events of ~1 KB of JSON each (envelope and lane metadata), the
 * session, run and lane-job records. Bound: 32 KB per run (measured: 23 KB); a leak per event, or job
 * records kept twice, would pass it.
 */
const REDIS_BYTES_PER_RUN_BOUND = 32 * 1024;

const arg = (name: string, fallback: string) => {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1]! : fallback;
};
const minutes = Number(arg('minutes', '1'));
const modes = arg('mode', 'both') === 'both' ? ['embedded', 'distributed'] : [arg('mode', 'both')];

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

interface Deployment {
  apis: AsmServer[];
  workers: ServeProcess[];
  redis?: RedisServer;
  sessionBody(i: number, provider: string): Record<string, unknown>;
  restartOne?(): Promise<void>;
  stop(): Promise<void>;
}

async function embedded(): Promise<Deployment> {
  const api = await startAsm('embedded', undefined, { ASM_CLAUDE_BIN: FAKE_CLAUDE }, ['shell', 'claude']);
  return { apis: [api], workers: [], sessionBody: (_i, provider) => ({ provider, lane: 'core' }), stop: () => api.stop() };
}

async function distributed(): Promise<Deployment> {
  const redis = await startRedisServer();
  const prefix = `soak-${randomUUID().slice(0, 8)}`;
  const env = { ASM_REDIS_PREFIX: prefix, ASM_CLAUDE_BIN: FAKE_CLAUDE, ASM_NODE_HEARTBEAT_MS: '500', ASM_NODE_TTL_MS: '3000', ASM_SWEEP_MS: '500' };
  const roots = mkdtempSync(join(tmpdir(), 'asm-soak-workers-'));
  // One workspace root for both APIs: a session created on one runs on either's lane.
  mkdirSync(join(roots, 'api'));
  const start = () => startAsm('redis', redis.url, { ...env, ASM_WORKSPACE_ROOT: join(roots, 'api') }, ['shell', 'claude']);
  const apis = [await start(), await start()];
  const workers = ['w1', 'w2'].map((name) => {
    // A session's cwd is the tenant's folder (`bench`), taken relative to the worker's own root.
    mkdirSync(join(roots, name, 'bench'), { recursive: true });
    return workerProcess(['--name', name, '--workspace-root', join(roots, name), '--capacity', '4'], { REDIS_URL: redis.url, ...env });
  });
  await until(async () => ((await apis[0]!.get('/v1/nodes')).nodes as any[]).filter((n) => n.role === 'worker' && n.state === 'ready').length === 2, 60_000);
  const deployment: Deployment = {
    apis,
    workers,
    redis,
    // Half the sessions run on the API processes' BullMQ lanes, half on the workers (placed by the pool).
    sessionBody: (i, provider) => ({ provider, lane: 'core', ...(i % 2 === 1 && { execution_mode: 'remote_node', driver_opts: { remote_node: 'pool:default' } }) }),
    async restartOne() {
      const old = apis[1]!;
      apis.splice(1, 1);
      await old.stop();
      apis.push(await start());
    },
    async stop() {
      for (const w of workers) w.child.kill('SIGTERM');
      await Promise.all(workers.map((w) => w.exited));
      await Promise.all(apis.map((a) => a.stop()));
      await redis.dispose();
      rmSync(roots, { recursive: true, force: true });
    },
  };
  return deployment;
}

async function until(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition().catch(() => false))) {
    if (Date.now() > deadline) throw new Error('soak: a condition did not hold in time');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A request to any live API, retried on another while one restarts. */
async function call(d: Deployment, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<any> {
  for (let attempt = 0; ; attempt++) {
    const api = d.apis[attempt % d.apis.length]!;
    try {
      const response = await fetch(api.url + path, { method, headers: { ...AUTH, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) });
      const parsed = await response.json();
      if (response.status >= 500 || response.status === 429) throw new Error(`${method} ${path}: ${response.status}`);
      if (!response.ok) throw Object.assign(new Error(`${method} ${path}: ${response.status} ${JSON.stringify(parsed)}`), { fatal: true });
      return parsed;
    } catch (err) {
      if ((err as { fatal?: boolean }).fatal || attempt > 50) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

interface Tally {
  submitted: number;
  terminal: number;
  eventsWritten: number;
  eventsRead: number;
  duplicates: number;
  gaps: number;
  resumes: number;
  submitMs: number[];
  runMs: number[];
  approvalMs: number[];
  errors: string[];
}

/**
 * Follows a session from seq 0 to its run's terminal event, dropping the connection after every 7
 * events and resuming with `after` (on whichever API is up), and acting on the run: approve, interrupt.
 */
function follow(d: Deployment, sessionId: string, onEvent: (event: any) => void, t: Tally): Promise<any[]> {
  const seen: any[] = [];
  return new Promise((resolve, reject) => {
    let attempt = 0;
    const connect = () => {
      const api = d.apis[attempt++ % d.apis.length]!;
      const after = seen.at(-1)?.seq ?? 0;
      const socket = new WebSocket(`${api.url.replace('http', 'ws')}/v1/events?session_id=${sessionId}&after=${after}`, { headers: AUTH });
      let inThisConnection = 0;
      let done = false;
      socket.on('message', (data) => {
        const frame = JSON.parse(String(data));
        if (frame.type !== 'event') return;
        const event = frame.event;
        const last = seen.at(-1)?.seq ?? 0;
        if (event.seq <= last) t.duplicates++;
        else if (last && event.seq !== last + 1) t.gaps++;
        seen.push(event);
        onEvent(event);
        if (['result', 'error'].includes(event.kind)) {
          done = true;
          socket.close();
          return resolve(seen);
        }
        if (++inThisConnection === 7) socket.close();
      });
      socket.on('error', () => undefined);
      socket.on('close', () => {
        if (done) return;
        t.resumes++;
        if (attempt > 500) return reject(new Error(`session ${sessionId}: gave up resuming`));
        setTimeout(connect, 20);
      });
    };
    connect();
  });
}

/** Each run's scenario and the state it must end in; any other end is counted as an error. */
const SCENARIOS = [
  { provider: 'shell', prompt: 'for i in $(seq 1 30); do echo "soak line $i"; done', ends: 'completed' },
  { provider: 'claude', prompt: 'Say hello, then create a file [fixture:c2-approve]', ends: 'completed' },
  { provider: 'claude', prompt: 'Run the slow job [fixture:c3-interrupt]', ends: 'interrupted' },
  { provider: 'claude', prompt: 'hi', ends: 'completed' },
];

async function oneRun(d: Deployment, i: number, t: Tally): Promise<void> {
  const scenario = SCENARIOS[i % SCENARIOS.length]!;
  // lane core: the fake CLI speaks the CLI's own protocol, not the Agent SDK's.
  const session = await call(d, 'POST', '/v1/sessions', d.sessionBody(i, scenario.provider));
  const submittedAt = Date.now();
  let runId = '';
  const followed = follow(
    d,
    session.id,
    (event) => {
      if (event.kind === 'approval_requested') {
        const at = Date.now();
        void call(d, 'POST', `/v1/approvals/${event.payload.approval_id}`, { decision: 'allow' }).then(() => t.approvalMs.push(Date.now() - at), (err) => t.errors.push(String(err)));
      }
      if (event.kind === 'tool_use' && scenario.prompt.includes('c3-interrupt')) void call(d, 'POST', `/v1/runs/${event.run_id}/interrupt`).catch((err) => t.errors.push(String(err)));
    },
    t,
  );
  const run = await call(d, 'POST', `/v1/sessions/${session.id}/runs`, { prompt: scenario.prompt });
  runId = run.id;
  t.submitted++;
  t.submitMs.push(Date.now() - submittedAt);
  const seen = await followed;
  t.runMs.push(Date.now() - submittedAt);
  // What the store holds for the run against what the resuming client read of it.
  let after = 0;
  for (;;) {
    const page = await call(d, 'GET', `/v1/runs/${runId}/events?after=${after}&limit=500`);
    t.eventsWritten += page.events.length;
    if (page.events.length === 0) break;
    after = page.next_after;
  }
  t.eventsRead += seen.filter((e) => e.run_id === runId).length;
  let ended: any;
  await until(async () => ['completed', 'failed', 'interrupted'].includes((ended = await call(d, 'GET', `/v1/runs/${runId}`)).state), 30_000);
  t.terminal++;
  if (ended.state !== scenario.ends) t.errors.push(`run ${runId} (${scenario.prompt}) ended ${ended.state}, not ${scenario.ends}: ${JSON.stringify(ended.result?.error ?? null)}`);
  await call(d, 'DELETE', `/v1/sessions/${session.id}`);
}

async function memory(d: Deployment): Promise<{ rss_mb: Record<string, number>; redis_mb: number | null }> {
  const rss: Record<string, number> = {};
  d.apis.forEach((a, i) => (rss[`api${i + 1}`] = round(rssMb(a.process.child.pid!))));
  d.workers.forEach((w, i) => (rss[`worker${i + 1}`] = round(rssMb(w.child.pid!))));
  if (!d.redis) return { rss_mb: rss, redis_mb: null };
  const client = new Redis(d.redis.url);
  const info = await client.info('memory');
  client.disconnect();
  return { rss_mb: rss, redis_mb: round(Number(/used_memory:(\d+)/.exec(info)![1]) / 1024 / 1024) };
}

async function soak(mode: string): Promise<boolean> {
  const d = mode === 'embedded' ? await embedded() : await distributed();
  const t: Tally = { submitted: 0, terminal: 0, eventsWritten: 0, eventsRead: 0, duplicates: 0, gaps: 0, resumes: 0, submitMs: [], runMs: [], approvalMs: [], errors: [] };
  let next = 0;
  // Warm-up: one of each scenario, so that start-of-soak memory is the running service's, not a cold one's.
  for (let i = 0; i < SCENARIOS.length; i++) await oneRun(d, next++, t);
  const start = await memory(d);
  const startedAt = Date.now();
  const endAt = startedAt + minutes * 60_000;
  let restarts = 0;
  const restarter = (async () => {
    while (d.restartOne && Date.now() + RESTART_EVERY_MS < endAt) {
      await new Promise((resolve) => setTimeout(resolve, RESTART_EVERY_MS));
      await d.restartOne();
      restarts++;
    }
  })();
  const progress = setInterval(() => process.stderr.write(`[soak ${mode}] ${t.submitted} runs submitted, ${t.terminal} terminal, ${restarts} API restarts\n`), 10_000);
  await Promise.all(
    Array.from({ length: ACTORS }, async () => {
      while (Date.now() < endAt) await oneRun(d, next++, t).catch((err) => t.errors.push(String(err)));
    }),
  );
  await restarter;
  clearInterval(progress);
  const end = await memory(d);
  await d.stop();

  const growth = Object.fromEntries(Object.keys(end.rss_mb).filter((k) => k in start.rss_mb).map((k) => [k, round(end.rss_mb[k]! - start.rss_mb[k]!)]));
  const redisGrowthBound = d.redis ? round((t.terminal * REDIS_BYTES_PER_RUN_BOUND) / 1024 / 1024) : null;
  const p99 = (xs: number[]) => (xs.length ? percentile([...xs].sort((a, b) => a - b), 99) : null);
  const rssWithin = Object.entries(growth).every(([k, g]) => k.startsWith('api2') || g <= RSS_GROWTH_BOUND_MB);
  const redisWithin = start.redis_mb === null || end.redis_mb! - start.redis_mb <= redisGrowthBound!;
  const balanced = t.submitted === t.terminal && t.eventsWritten === t.eventsRead && t.duplicates === 0 && t.gaps === 0 && t.errors.length === 0;
  const line = {
    soak: mode,
    minutes,
    actors: ACTORS,
    runs_submitted: t.submitted,
    runs_terminal: t.terminal,
    events_written: t.eventsWritten,
    events_read: t.eventsRead,
    duplicates: t.duplicates,
    gaps: t.gaps,
    resumes: t.resumes,
    api_restarts: restarts,
    p99_ms: { submit: p99(t.submitMs), run_to_terminal: p99(t.runMs), approval_decision: p99(t.approvalMs) },
    memory_start: start,
    memory_end: end,
    rss_growth_mb: growth,
    rss_growth_bound_mb: RSS_GROWTH_BOUND_MB,
    redis_growth_bound_mb: redisGrowthBound,
    errors: t.errors.slice(0, 5),
    ok: balanced && rssWithin && redisWithin,
    machine: machine(),
  };
  process.stdout.write(JSON.stringify(line) + '\n');
  return line.ok;
}

let ok = true;
for (const mode of modes) ok = (await soak(mode)) && ok;
process.exit(ok ? 0 : 1);
