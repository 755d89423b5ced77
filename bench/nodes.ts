/**
 * Worker-node benchmark: runs/s of a short shell run (`echo hi`) submitted through the HTTP API of
 * one `asm serve` process and executed by 1, 2 and 4 `asm worker` processes (remote_node, pools
 * p1, p2 and p4 of that many workers), against the same runs executed by the API process itself (execution_mode local),
 * all on a private redis-server started for the run. Prints one JSON line; progress goes to stderr.
 *
 * Every configuration gets the same load: CLIENTS sessions, each submitting its runs one after
 * another with `wait: true`, so at most CLIENTS runs are in flight; the API's prompt lane and every
 * worker's capacity are raised to CLIENTS, so what changes between configurations is only how many
 * processes share the work. Configurations take turns in each round (local, 1, 2, 4 workers) and
 * medians over the rounds are reported, so drift on a shared machine hits them all alike.
 *
 * Usage: npm run bench -- nodes [--quick]   (--quick: one round of fewer runs)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort } from '../test/helpers/ports.js';
import { serveProcess, untilServing, workerProcess, type ServeProcess } from '../test/helpers/processes.js';
import { startRedisServer } from '../test/helpers/redis-server.js';
import { waitFor } from '../test/helpers/wait.js';

const log = (message: string) => process.stderr.write(`[bench nodes] ${message}\n`);
const round = (value: number, digits = 1) => Number(value.toFixed(digits));
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const CLIENTS = 8;
const WORKER_COUNTS = [1, 2, 4];

interface Api {
  url: string;
  post(path: string, body: unknown): Promise<any>;
}

function api(url: string): Api {
  return {
    url,
    async post(path, body) {
      const response = await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const parsed = await response.json();
      if (!response.ok) throw new Error(`POST ${path}: ${response.status} ${JSON.stringify(parsed)}`);
      return parsed;
    },
  };
}

/** `runs` runs of `echo hi` spread over CLIENTS sessions; returns runs/s. Every run must complete. */
async function measure(client: Api, session: Record<string, unknown>, runs: number): Promise<number> {
  const sessions: string[] = [];
  for (let i = 0; i < CLIENTS; i++) sessions.push((await client.post('/v1/sessions', session)).id);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    sessions.map(async (id) => {
      while (next < runs) {
        next++;
        const run = await client.post(`/v1/sessions/${id}/runs`, { prompt: 'echo hi', wait: true });
        if (run.state !== 'completed') throw new Error(`run ${run.id} ended ${run.state}: ${JSON.stringify(run.result?.error)}`);
      }
    }),
  );
  return runs / ((performance.now() - started) / 1000);
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const runs = quick ? 150 : 450;
  const rounds = quick ? 1 : 3;
  // Per configuration, before the rounds: a fresh worker runs its first few dozen runs at half speed (JIT).
  const warmup = quick ? 50 : 100;
  const redis = await startRedisServer();
  const workspace = mkdtempSync(join(tmpdir(), 'asm-bench-nodes-'));
  const lanes = JSON.stringify([{ id: 'prompt', priority: 5, minConcurrency: 1, maxConcurrency: CLIENTS }]);
  // ASM_RATE_LIMIT=0: the bench measures the service, not its per-tenant request limit.
  const shared = { REDIS_URL: redis.url, ASM_REDIS_PREFIX: 'bench', ASM_WORKSPACE_ROOT: workspace, ASM_LANES: lanes, ASM_LOG_LEVEL: 'warn', ASM_RATE_LIMIT: '0' };
  const processes: ServeProcess[] = [];
  const loadBefore = loadavg();
  try {
    const port = await freePort();
    processes.push(serveProcess({ ...shared, ASM_HOST: '127.0.0.1', ASM_PORT: String(port), ASM_NODE_NAME: 'bench-api' }));
    const url = `http://127.0.0.1:${port}`;
    await untilServing(url, '/readyz', 30_000);
    const client = api(url);

    // Every worker runs throughout; configuration N sends its runs to pool pN, which has N of them,
    // so the configurations can take turns round by round and share the machine's drift.
    for (const count of WORKER_COUNTS) {
      for (let i = 1; i <= count; i++) {
        const name = `bench-p${count}-w${i}`;
        processes.push(workerProcess(['--name', name, '--pool', `p${count}`, '--providers', 'shell', '--capacity', String(CLIENTS)], shared));
      }
    }
    const workerTotal = processes.length - 1;
    await waitFor(
      async () => {
        const nodes = ((await (await fetch(`${url}/v1/nodes`)).json()) as { nodes: Array<{ role: string; state: string }> }).nodes;
        return nodes.filter((n) => n.role === 'worker' && n.state === 'ready').length === workerTotal;
      },
      `${workerTotal} ready workers`,
      120_000,
    );
    const configurations: Array<[string, Record<string, unknown>]> = [
      ['local', { provider: 'shell', execution_mode: 'local' }],
      ...WORKER_COUNTS.map((count): [string, Record<string, unknown>] => [
        `workers_${count}`,
        { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: `pool:p${count}` } },
      ]),
    ];
    const samples: Record<string, number[]> = Object.fromEntries(configurations.map(([label]) => [label, []]));
    for (const [, session] of configurations) await measure(client, session, warmup);
    for (let r = 0; r < rounds; r++) {
      for (const [label, session] of configurations) {
        samples[label]!.push(round(await measure(client, session, runs)));
        log(`round ${r + 1}, ${label}: ${samples[label]!.at(-1)} runs/s`);
      }
    }
    const medians = Object.fromEntries(Object.entries(samples).map(([label, values]) => [label, median(values)]));
    const cpuInfo = cpus();
    const result = {
      bench: 'nodes',
      date: new Date().toISOString(),
      node: process.version,
      redis: execFileSync('redis-server', ['-v']).toString().trim(),
      cpus: `${cpuInfo.length} × ${cpuInfo[0]?.model ?? 'unknown'}`,
      loadavg_before: loadBefore.map((l) => round(l, 2)),
      loadavg_after: loadavg().map((l) => round(l, 2)),
      quick,
      workload: { prompt: 'echo hi', provider: 'shell', runs_per_configuration: runs, warmup_runs_per_configuration: warmup, clients: CLIENTS, worker_capacity: CLIENTS },
      rounds,
      runs_per_s_median: medians,
      runs_per_s_rounds: samples,
      vs_local: Object.fromEntries(WORKER_COUNTS.map((count) => [`workers_${count}`, round(medians[`workers_${count}`]! / medians.local!, 2)])),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } catch (err) {
    // What the API and the workers logged (level warn and up) is where a failed run's cause is.
    for (const proc of processes) if (proc.output()) log(`${proc.child.spawnargs.slice(4).join(' ')}:\n${proc.output()}`);
    throw err;
  } finally {
    // Workers first (they drain on SIGTERM), then the API; SIGKILL whatever has not exited in 10 s.
    for (const proc of processes.reverse()) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) continue;
      proc.child.kill('SIGTERM');
      const timer = setTimeout(() => proc.child.kill('SIGKILL'), 10_000);
      await proc.exited;
      clearTimeout(timer);
    }
    await redis.dispose();
    rmSync(workspace, { recursive: true, force: true });
  }
}
