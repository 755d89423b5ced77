import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { FAKE_CLAUDE, TERMINAL } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';
import { serveProcess, untilServing, workerProcess, type ServeProcess } from '../helpers/processes.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { scratchDir } from '../helpers/sandbox.js';
import { tenant, tenantsFile } from '../helpers/tenants.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The fault suite's distributed deployment, as an operator runs one: a private redis-server, `asm
 * serve` API processes and `asm worker` nodes as real OS processes (so a test can SIGKILL them), one
 * tenant from a tenants file (an admin, granted `shell` and `claude`; the workers get no tenants, as
 * README "Tenants" says they need none), every process with the same key prefix and short node
 * heartbeats, so a dead one is noticed within TTL_MS + SWEEP_MS.
 */

/**
 * 3 s, not the 1.5 s of the lighter tests: a process restarted next to running suites can stall its
 * heartbeats for over a second while it warms up, and a TTL that short then has its live runs found
 * lost (seen in api-kill.test.ts at load 10+).
 */
export const TTL_MS = 3_000;
export const SWEEP_MS = 100;
export const TENANT = 'faults';
const KEY = 'fault-suite-key-0123456789';
export const AUTH = { authorization: `Bearer ${KEY}` };

export interface Api {
  name: string;
  url: string;
  process: ServeProcess;
}

export interface Cluster {
  redis: RedisServer;
  /** Starts `asm serve` as node `name` (on `port`, for a restart in place) and resolves once it is ready. */
  api(name: string, port?: number): Promise<Api>;
  /** Starts `asm worker --name name` (pool default); `ready` resolves once `via` lists it ready. */
  worker(name: string, via: Api, capacity?: number): { process: ServeProcess; ready: Promise<void> };
  /** Every process started, for cleanup. */
  dispose(): Promise<void>;
}

export async function startCluster(): Promise<Cluster> {
  const redis = await startRedisServer();
  const dir = scratchDir('asm-fault-cluster-');
  const env = {
    REDIS_URL: redis.url,
    ASM_REDIS_PREFIX: `fc-${randomUUID().slice(0, 8)}`,
    ASM_CLAUDE_BIN: FAKE_CLAUDE,
    ASM_NODE_HEARTBEAT_MS: '200',
    ASM_NODE_TTL_MS: String(TTL_MS),
    ASM_SWEEP_MS: String(SWEEP_MS),
    ASM_RATE_LIMIT: '0',
    ASM_LOG_LEVEL: 'warn',
  };
  const unbounded = { sessions: 100_000, active_runs: 10_000, queued_runs: 10_000, connections: 10_000 };
  const tenants = tenantsFile([tenant(TENANT, KEY, { role: 'admin', providers: ['shell', 'claude'], quotas: unbounded })]);
  // One workspace root for every API process: a session created on one runs on any's lane.
  const apiRoot = join(dir, 'api');
  const processes: ServeProcess[] = [];
  return {
    redis,
    async api(name, port) {
      const listen = port ?? (await freePort());
      const proc = serveProcess({ ...env, ASM_NODE_NAME: name, ASM_HOST: '127.0.0.1', ASM_PORT: String(listen), ASM_WORKSPACE_ROOT: apiRoot, ASM_TENANTS_FILE: tenants });
      processes.push(proc);
      const url = `http://127.0.0.1:${listen}`;
      await Promise.race([
        untilServing(url, '/readyz', 60_000),
        proc.exited.then((code) => Promise.reject(new Error(`asm serve ${name} exited (${code}):\n${proc.output()}`))),
      ]);
      return { name, url, process: proc };
    },
    worker(name, via, capacity = 2) {
      // A session's cwd is its tenant's folder, taken relative to the worker's own root.
      const root = join(dir, `root-${name}`);
      mkdirSync(join(root, TENANT), { recursive: true });
      const proc = workerProcess(['--name', name, '--workspace-root', root, '--capacity', String(capacity)], env);
      processes.push(proc);
      const ready = waitFor(
        async () => {
          if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`worker ${name} exited:\n${proc.output()}`);
          const nodes = (await call(via, 'GET', '/v1/nodes')).body.nodes as Array<{ name: string; state: string }>;
          return nodes.some((n) => n.name === name && n.state === 'ready');
        },
        `worker ${name} to be ready`,
        60_000,
      ).then(() => undefined);
      return { process: proc, ready };
    },
    async dispose() {
      for (const proc of processes) proc.child.kill('SIGKILL');
      await Promise.all(processes.map((p) => (p.child.exitCode === null && p.child.signalCode === null ? p.exited : undefined)));
      await redis.dispose();
      rmSync(dir, { recursive: true, force: true });
      rmSync(join(tenants, '..'), { recursive: true, force: true });
    },
  };
}

/** SIGKILL, and the moment the process was gone. */
export async function sigkill(proc: ServeProcess): Promise<number> {
  proc.child.kill('SIGKILL');
  await proc.exited;
  return Date.now();
}

/** A request as the tenant; the status and the parsed body. */
export async function call(api: Api, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const response = await fetch(api.url + path, {
    method,
    headers: { ...AUTH, ...(body !== undefined && { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Every stored event of a run, paged. */
export async function runEvents(api: Api, runId: string): Promise<any[]> {
  const events: any[] = [];
  for (let after = 0; ; ) {
    const page = await call(api, 'GET', `/v1/runs/${runId}/events?after=${after}&limit=500`);
    if (page.status !== 200) throw new Error(`events of ${runId}: ${page.status} ${JSON.stringify(page.body)}`);
    events.push(...page.body.events);
    if (page.body.events.length === 0) return events;
    after = page.body.next_after;
  }
}

/** The run and its stored events, checked to end with exactly one terminal event, the last. */
export async function endedOnce(api: Api, runId: string): Promise<{ run: any; events: any[]; terminal: any }> {
  const run = (await call(api, 'GET', `/v1/runs/${runId}`)).body;
  const events = await runEvents(api, runId);
  const terminal = events.filter((e) => TERMINAL.has(e.kind));
  expect(terminal, `terminal events of ${runId}`).toHaveLength(1);
  expect(events.at(-1)).toEqual(terminal[0]);
  return { run, events, terminal: terminal[0] };
}
