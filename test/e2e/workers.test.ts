/**
 * Worker nodes (execution_mode remote_node) end to end: an in-process API server and real
 * `asm worker` processes on the shared test Redis, one key prefix per test. Start failures that need
 * a node in a state a real worker passes through too quickly (starting, deaf, another version) are
 * staged with a node record written straight into Redis: the same record a worker's heartbeat writes.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { RequestBody } from '../../src/client/index.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { FAKE_CLAUDE, reply, startServer, TERMINAL, type TestServer } from '../helpers/server.js';
import { workerProcess, type ServeProcess } from '../helpers/processes.js';
import { scratchDir } from '../helpers/sandbox.js';
import { entriesOf, rawRequest, tarOf } from '../helpers/tar.js';
import { tenant, tenantsFile } from '../helpers/tenants.js';
import { waitFor } from '../helpers/wait.js';
import { VERSION } from '../../src/version.js';

const redisUrl = inject('asmTestRedisUrl');
const cleanups: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Short heartbeats and TTLs: a lost worker is noticed within TTL + sweep = 1.6 s. */
const CLUSTER_ENV = { ASM_NODE_HEARTBEAT_MS: '200', ASM_NODE_TTL_MS: '1500', ASM_SWEEP_MS: '100' };

function deployment() {
  const prefix = `wrk-${randomUUID().slice(0, 8)}`;
  const dir = scratchDir('asm-workers-');
  const log = join(dir, 'claude-stdin.log');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const shared = { REDIS_URL: redisUrl, ASM_REDIS_PREFIX: prefix, ...CLUSTER_ENV };
  return {
    prefix,
    stdinLog: () => readJsonLines(log),
    async api(env: Record<string, string> = {}): Promise<TestServer> {
      const server = await startServer({ ...shared, ...env });
      cleanups.push(() => server.close());
      return server;
    },
    /** A worker process with its own workspace root; resolves once the API lists it ready. */
    async worker(api: TestServer, name: string, args: string[] = [], env: Record<string, string> = {}): Promise<ServeProcess & { root: string }> {
      const root = join(dir, `root-${name}-${randomUUID().slice(0, 4)}`);
      mkdirSync(root);
      const proc = workerProcess(['--name', name, '--workspace-root', root, ...args], {
        ...shared,
        ASM_CLAUDE_BIN: FAKE_CLAUDE,
        FAKE_CLAUDE_LOG: log,
        ASM_PASS_ENV: 'FAKE_CLAUDE_LOG',
        ...env,
      });
      cleanups.push(() => void proc.child.kill('SIGKILL'));
      await waitFor(
        async () => {
          if (proc.child.exitCode !== null) throw new Error(`worker ${name} exited:\n${proc.output()}`);
          // From the API's cluster view rather than GET /v1/nodes, which a test's tenants may not be allowed.
          return (await api.app.cluster.nodes()).some((n) => n.name === name && n.state === 'ready');
        },
        `worker ${name} to be ready`,
        20_000,
      );
      return { ...proc, root };
    },
    /** A node record as a heartbeat writes it, for a node that is not a running worker. */
    async fakeNode(fields: Record<string, unknown>): Promise<{ id: string; redis: Redis }> {
      const redis = new Redis(redisUrl);
      cleanups.push(() => void redis.disconnect());
      const id = `${fields.name}-${randomUUID().slice(0, 8)}`;
      const now = new Date().toISOString();
      const snapshot = { id, role: 'worker', version: VERSION, node_version: process.versions.node, providers: ['shell', 'claude'], missing_clis: [], capacity: 1, load: 0, pool: 'default', state: 'ready', started_at: now, last_heartbeat: now, cookie: null, ...fields };
      await redis.multi().set(`${prefix}:node:{${id}}`, JSON.stringify(snapshot), 'PX', 60_000).sadd(`${prefix}:nodes`, id).exec();
      return { id, redis };
    },
  };
}

async function session(api: TestServer, body: RequestBody<'/v1/sessions', 'post'>): Promise<any> {
  const res = await reply(api.client.POST('/v1/sessions', { body }));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

async function runToEnd(api: TestServer, sessionId: string, body: RequestBody<'/v1/sessions/{id}/runs', 'post'>): Promise<any> {
  const res = await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { ...body, wait: true } }));
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

const PROJECT = [
  { path: 'a.txt', body: 'one\ntwo\n' },
  { path: 'dir/', type: 'Directory' as const, mode: 0o755 },
  { path: 'dir/b.txt', body: 'bee\n' },
];

/** The run ended failed with this start-failure reason. */
function expectFailure(run: any, kind: string, reason: string): void {
  expect(run.state).toBe('failed');
  expect(run.result.error).toMatchObject({ kind, details: { reason } });
}

describe('worker nodes: remote_node runs', () => {
  it('runs on a named worker: events from the node, GET /v1/nodes, and a per-run local override', async () => {
    const d = deployment();
    const api = await d.api();
    await d.worker(api, 'w1', ['--pool', 'p1', '--providers', 'shell,claude', '--capacity', '3']);
    const nodes = (await reply(api.client.GET('/v1/nodes'))).body.nodes;
    expect(nodes.find((n: any) => n.name === 'w1')).toMatchObject({ role: 'worker', pool: 'p1', providers: ['claude', 'shell'], capacity: 3, version: VERSION, state: 'ready' });
    expect(nodes.find((n: any) => n.name === 'w1').cookie).toBeUndefined();

    const s = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1', future_option: 1 } });
    const remote = await runToEnd(api, s.id, { prompt: 'pwd' });
    expect(remote.state).toBe('completed');
    expect(remote.result.metadata).toMatchObject({ execution_mode: 'remote_node', node: 'w1', lane: 'core' });
    // The session's cwd (the API's workspace root) is taken relative to the worker's own root.
    expect(remote.result.text).toContain('root-w1-');
    const events = (await reply(api.client.GET('/v1/runs/{id}/events', { params: { path: { id: remote.id } } }))).body.events;
    expect(events.find((e: any) => e.kind === 'run_started').payload.node).toBe('w1');

    const local = await runToEnd(api, s.id, { prompt: 'echo here', execution_mode: 'local' });
    expect(local).toMatchObject({ state: 'completed', result: { text: 'here\n', metadata: { execution_mode: 'local', node: 'test-node' } } });
  }, 60_000);

  it("runs a tenant's runs on a worker that knows no tenants, under the tenant's output quota", async () => {
    // Found by the soak (issue 13): a worker read the run's output quota from its own tenants, which
    // it does not have, and the start threw where nothing ended the run: it stayed queued for good.
    const d = deployment();
    const key = 'acme-key-0123456789';
    const headers = { authorization: `Bearer ${key}` };
    const api = await d.api({ ASM_TENANTS_FILE: tenantsFile([tenant('acme', key, { providers: ['shell'], quotas: { output_bytes_per_run: 4096 } })]) });
    const w = await d.worker(api, 'w1');
    mkdirSync(join(w.root, 'acme'));
    const s = await reply(api.client.POST('/v1/sessions', { body: { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } }, headers }));
    expect(s.status, JSON.stringify(s.body)).toBe(201);
    const run = (prompt: string) => reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.body.id } }, body: { prompt, wait: true }, headers }));
    expect((await run('echo small')).body).toMatchObject({ state: 'completed', result: { text: 'small\n', metadata: { node: 'w1' } } });
    const flood = await run('for i in $(seq 1 200); do echo "line $i of a run over its tenant\'s quota"; done');
    expect(flood.body).toMatchObject({ state: 'failed', result: { error: { kind: 'quota_exceeded', details: { quota: 'run_output_bytes', limit: 4096 } } } });
  }, 60_000);

  it('routes approvals and interrupts to the worker that holds the CLI', async () => {
    const d = deployment();
    const api = await d.api();
    await d.worker(api, 'w1');
    const s = await session(api, { provider: 'claude', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1', remote_transport_call_timeout_ms: 2_000 } });
    const ws = api.stream(`session_id=${s.id}&after=0`);
    const run = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'create a file [fixture:c2-approve]' } }))).body;
    const requested = await ws.event('approval_requested');
    const decided = await reply(api.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'allow' } }));
    expect(decided.status).toBe(200);
    expect((await ws.event('result')).run_id).toBe(run.id);
    expect(d.stdinLog().find((l) => l.type === 'control_response').response.response.behavior).toBe('allow');

    const slow = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'slow job [fixture:c3-interrupt]' } }))).body;
    await ws.event('tool_use', (e) => e.run_id === slow.id);
    expect((await reply(api.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: slow.id } } }))).status).toBe(202);
    const terminal = await ws.next((f) => f.type === 'event' && f.event.run_id === slow.id && TERMINAL.has(f.event.kind));
    expect(terminal.event.payload).toMatchObject({ kind: 'user_cancelled' });
    expect(d.stdinLog().some((l) => l.type === 'control_request' && l.request?.subtype === 'interrupt')).toBe(true);
  }, 60_000);

  it('interrupts a run queued on a busy worker before it starts', async () => {
    const d = deployment();
    const api = await d.api();
    await d.worker(api, 'w1', ['--capacity', '1']);
    const opts: RequestBody<'/v1/sessions', 'post'> = { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } };
    const [busy, other] = [await session(api, opts), await session(api, opts)];
    const first = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: busy.id } }, body: { prompt: 'sleep 3; echo done' } }))).body;
    await waitFor(async () => (await reply(api.client.GET('/v1/runs/{id}', { params: { path: { id: first.id } } }))).body.state === 'running', 'the first run to start', 10_000);
    const queued = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: other.id } }, body: { prompt: 'echo never' } }))).body;
    // Handed over: the worker owns it and holds it in its queue.
    await waitFor(async () => (await api.app.store.runs.get(queued.id))?.owner, 'the queued run to have an owner', 10_000);
    expect((await reply(api.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: queued.id } } }))).status).toBe(202);
    const ended = await api.app.sessions.waitForRun(queued.id, 5_000);
    expect(ended).toMatchObject({ state: 'interrupted', started_at: null, result: { error: { kind: 'user_cancelled' } } });
    expect((await api.app.sessions.waitForRun(first.id, 10_000)).state).toBe('completed');
  }, 60_000);

  it('ends the runs of a SIGKILLed worker with node_lost, and a start on it right after fails to connect', async () => {
    const d = deployment();
    const api = await d.api();
    const w = await d.worker(api, 'w1');
    const s = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1', remote_connect_timeout_ms: 300 } });
    const run = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'echo started; sleep 30' } }))).body;
    await waitFor(async () => (await reply(api.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state === 'running', 'the run to start', 10_000);
    w.child.kill('SIGKILL');
    await w.exited;
    const killedAt = Date.now();

    // Its heartbeat is still current, but nobody listens on its control channel.
    const other = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } });
    expectFailure(await runToEnd(api, other.id, { prompt: 'echo x' }), 'connection_failed', 'remote_connect_failed');

    const lost = await api.app.sessions.waitForRun(run.id, 10_000);
    expect(lost).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost' } } });
    expect(Date.now() - killedAt).toBeLessThan(1_500 + 100 + 1_000);
    // Once it is gone from the registry, a start times out waiting for it.
    expectFailure(await runToEnd(api, s.id, { prompt: 'echo x' }), 'connection_failed', 'remote_connect_timeout');
  }, 60_000);

  it('a crashed remote backend ends the run as a crashed local one does', async () => {
    const d = deployment();
    const api = await d.api();
    await d.worker(api, 'w1');
    const s = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } });
    const remote = await runToEnd(api, s.id, { prompt: 'echo partial; kill -KILL $$' });
    const local = await runToEnd(api, s.id, { prompt: 'echo partial; kill -KILL $$', execution_mode: 'local' });
    expect(remote.state).toBe('failed');
    expect({ ...remote.result.error, message: undefined }).toEqual({ ...local.result.error, message: undefined });
    expect(remote.result.text).toBe(local.result.text);
  }, 60_000);
});

describe('worker nodes: start failures', () => {
  it('distribution disabled: an embedded server refuses remote_node with 400', async () => {
    const api = await startServer();
    cleanups.push(() => api.close());
    const res = await reply(api.client.POST('/v1/sessions', { body: { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } } }));
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ kind: 'config_invalid', details: { reason: 'distribution_disabled' } });
    const local = await session(api, { provider: 'shell' });
    const run = await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: local.id } }, body: { prompt: 'echo', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } } }));
    expect(run.body.error).toMatchObject({ kind: 'config_invalid', details: { reason: 'distribution_disabled' } });
  });

  it('invalid remote options are refused at submit, naming the field', async () => {
    const d = deployment();
    const api = await d.api();
    const missing = await reply(api.client.POST('/v1/sessions', { body: { provider: 'shell', execution_mode: 'remote_node' } }));
    expect(missing.status).toBe(400);
    expect(missing.body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'driver_opts.remote_node' } });
    const s = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } });
    const bad = await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'x', driver_opts: { remote_rpc_timeout_ms: -1 } } }));
    expect(bad.body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'driver_opts.remote_rpc_timeout_ms' } });
  });

  it('connect timeout, version mismatch, not ready, bootstrap lease and RPC timeout', async () => {
    const d = deployment();
    // The server's defaults are the lowest layer: the session names no node.
    const api = await d.api({ ASM_REMOTE_DEFAULTS: JSON.stringify({ remote_node: 'ghost', remote_connect_timeout_ms: 300, remote_rpc_timeout_ms: 60_000 }) });
    const s = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_rpc_timeout_ms: 400 } });
    const started = Date.now();
    expectFailure(await runToEnd(api, s.id, { prompt: 'x' }), 'connection_failed', 'remote_connect_timeout');
    expect(Date.now() - started).toBeLessThan(3_000);

    await d.fakeNode({ name: 'old', version: '0.0.9' });
    const old = await runToEnd(api, s.id, { prompt: 'x', driver_opts: { remote_node: 'old' } });
    expectFailure(old, 'connection_failed', 'remote_version_mismatch');
    expect(old.result.error.details).toMatchObject({ local: VERSION, remote: '0.0.9' });
    // Same build, another Node.js major: refused as clearly, naming both runtimes.
    const otherMajor = `${Number(process.versions.node.split('.')[0]) - 2}.9.0`;
    await d.fakeNode({ name: 'oldnode', node_version: otherMajor });
    const oldNode = await runToEnd(api, s.id, { prompt: 'x', driver_opts: { remote_node: 'oldnode' } });
    expectFailure(oldNode, 'connection_failed', 'remote_version_mismatch');
    expect(oldNode.result.error.details).toMatchObject({ local_node: process.versions.node, remote_node_version: otherMajor });
    expect(oldNode.result.error.message).toContain(`Node.js ${otherMajor}`);

    await d.fakeNode({ name: 'booting', state: 'starting' });
    const at = Date.now();
    expectFailure(await runToEnd(api, s.id, { prompt: 'x', driver_opts: { remote_node: 'booting' } }), 'connection_failed', 'remote_not_ready');
    expect(Date.now() - at).toBeLessThan(1_000);
    const leased = await runToEnd(api, s.id, { prompt: 'x', driver_opts: { remote_node: 'booting', remote_bootstrap_mode: 'ensure_started', remote_boot_lease_timeout_ms: 500 } });
    expectFailure(leased, 'connection_failed', 'remote_bootstrap_failed');

    // A node that takes the start request and never answers it.
    const deaf = await d.fakeNode({ name: 'deaf' });
    const listener = deaf.redis.duplicate();
    cleanups.push(() => void listener.disconnect());
    await listener.subscribe(`${d.prefix}:ctl:${deaf.id}`);
    expectFailure(await runToEnd(api, s.id, { prompt: 'x', driver_opts: { remote_node: 'deaf' } }), 'connection_failed', 'remote_rpc_timeout');
  }, 30_000);

  it('ensure_started waits for a node that comes up within the boot lease', async () => {
    const d = deployment();
    const api = await d.api();
    const s = await session(api, {
      provider: 'shell',
      execution_mode: 'remote_node',
      driver_opts: { remote_node: 'late', remote_bootstrap_mode: 'ensure_started', remote_connect_timeout_ms: 20_000, remote_boot_lease_timeout_ms: 20_000 },
    });
    const run = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'echo made it' } }))).body;
    await d.worker(api, 'late');
    expect(await api.app.sessions.waitForRun(run.id, 10_000)).toMatchObject({ state: 'completed', result: { text: 'made it\n' } });
  }, 60_000);

  it('a lane with retry retries a run that failed before its agent started (no node yet): one terminal event, completed', async () => {
    const d = deployment();
    const skill = { id: 'skill', priority: 4, maxConcurrency: 3, retry: { maxRetries: 30, initialDelayMs: 300, multiplier: 1, maxDelayMs: 300 } };
    const api = await d.api({ ASM_LANES: JSON.stringify([skill]) });
    const s = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'retried', remote_connect_timeout_ms: 200 } });
    const run = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'echo second try' } }))).body;
    // The first attempts find no node (remote_connect_timeout, retryable): the run stays queued, no terminal event.
    await waitFor(async () => (await api.app.engine.metrics()).find((m) => m.id === 'skill')!.retried > 0, 'a retry of the start', 10_000);
    expect((await reply(api.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('queued');
    await d.worker(api, 'retried');
    expect(await api.app.sessions.waitForRun(run.id, 20_000)).toMatchObject({ state: 'completed', result: { text: 'second try\n' } });
    const events = (await reply(api.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id } } }))).body.events;
    expect(events.filter((e: any) => ['result', 'error', 'run_completed'].includes(e.kind))).toHaveLength(1);
    expect(events.some((e: any) => e.kind === 'error')).toBe(false);
  }, 60_000);

  it('cookie conflict, capability mismatch and backend start failures on a real worker', async () => {
    const d = deployment();
    const api = await d.api();
    const w = await d.worker(api, 'w1', ['--cookie', 'open-sesame', '--providers', 'shell']);
    await d.worker(api, 'nocli', [], { ASM_CLAUDE_BIN: '/nonexistent/claude' });
    const shell = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } });
    expectFailure(await runToEnd(api, shell.id, { prompt: 'x' }), 'connection_failed', 'cookie_conflict');
    expectFailure(await runToEnd(api, shell.id, { prompt: 'x', driver_opts: { remote_cookie: 'wrong' } }), 'connection_failed', 'cookie_conflict');
    expect((await runToEnd(api, shell.id, { prompt: 'echo ok', driver_opts: { remote_cookie: 'open-sesame' } })).state).toBe('completed');

    const claude = await session(api, { provider: 'claude', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1', remote_cookie: 'open-sesame' } });
    const missing = await runToEnd(api, claude.id, { prompt: 'x' });
    expectFailure(missing, 'connection_failed', 'remote_capability_mismatch');
    expect(missing.result.error.details.missing).toEqual(['claude']);

    // A node that serves claude without its CLI says so on its heartbeat: refused at once, naming the binary.
    const nodes = (await reply(api.client.GET('/v1/nodes'))).body.nodes;
    expect(nodes.find((n: any) => n.name === 'nocli')).toMatchObject({ missing_clis: expect.arrayContaining([{ provider: 'claude', binary: '/nonexistent/claude' }]), node_version: process.versions.node });
    const onNocli = { remote_node: 'nocli', remote_cookie: null };
    const refusals = [
      await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: claude.id } }, body: { prompt: 'x', driver_opts: onNocli } })),
      await reply(api.client.POST('/v1/sessions', { body: { provider: 'claude', execution_mode: 'remote_node', driver_opts: onNocli } })),
      await reply(api.client.POST('/v1/providers/{name}/resolve', { params: { path: { name: 'claude' } }, body: { execution_mode: 'remote_node', driver_opts: onNocli } })),
    ];
    for (const refused of refusals) {
      expect(refused.body.error).toMatchObject({ kind: 'cli_not_found', details: { binary: '/nonexistent/claude', variable: 'ASM_CLAUDE_BIN' } });
      expect(refused.body.error.message).toContain('on node nocli');
    }

    mkdirSync(join(w.root, 'locked'));
    chmodSync(join(w.root, 'locked'), 0o500);
    const locked = await runToEnd(api, shell.id, { prompt: 'x', driver_opts: { remote_cookie: 'open-sesame', remote_cwd: 'locked' } });
    // root ignores file modes: there the directory is writable and the run goes through.
    if (process.getuid?.() !== 0) expectFailure(locked, 'config_invalid', 'remote_backend_start_failed');
    const outside = await runToEnd(api, shell.id, { prompt: 'x', driver_opts: { remote_cookie: 'open-sesame', remote_cwd: '../..' } });
    expectFailure(outside, 'config_invalid', 'remote_backend_start_failed');
  }, 60_000);
});

describe('worker nodes: pools', () => {
  it('balances a pool by load, keeps a conversation on its node, and skips a draining node', async () => {
    const d = deployment();
    const api = await d.api();
    const a = await d.worker(api, 'pa', ['--pool', 'blue', '--capacity', '1']);
    await d.worker(api, 'pb', ['--pool', 'blue', '--capacity', '1']);
    const opts: RequestBody<'/v1/sessions', 'post'> = { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'pool:blue' } };
    const [one, two] = [await session(api, opts), await session(api, opts)];
    const long = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: one.id } }, body: { prompt: 'sleep 2; echo long' } }))).body;
    await waitFor(async () => (await api.app.store.runs.get(long.id))?.state === 'running', 'the long run to start', 10_000);
    const busyNode = (await api.app.store.runs.get(long.id))!.observability.node;
    const second = await runToEnd(api, two.id, { prompt: 'echo quick' });
    expect(second.result.metadata.node).not.toBe(busyNode);
    expect((await api.app.sessions.waitForRun(long.id, 10_000)).state).toBe('completed');

    // A conversation (the provider's session files are on its node) stays where it began.
    const convo = await session(api, { provider: 'claude', execution_mode: 'remote_node', driver_opts: { remote_node: 'pool:blue' } });
    const nodes = [];
    for (let i = 0; i < 4; i++) nodes.push((await runToEnd(api, convo.id, { prompt: 'hello' })).result.metadata.node);
    expect(new Set(nodes).size).toBe(1);

    // SIGTERM: pa drains (finishes what it has, takes nothing new); the pool goes on on pb.
    const draining = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: one.id } }, body: { prompt: 'sleep 1.5; echo drained', driver_opts: { remote_node: 'pa' } } }))).body;
    await waitFor(async () => (await reply(api.client.GET('/v1/runs/{id}', { params: { path: { id: draining.id } } }))).body.state === 'running', 'the run on the draining node to start', 10_000);
    a.child.kill('SIGTERM');
    await waitFor(async () => (await reply(api.client.GET('/v1/nodes'))).body.nodes.some((n: any) => n.name === 'pa' && n.state === 'draining'), 'node pa to be draining', 10_000);
    for (let i = 0; i < 3; i++) expect((await runToEnd(api, two.id, { prompt: 'echo pool' })).result.metadata.node).toBe('pb');
    const named = await runToEnd(api, two.id, { prompt: 'x', driver_opts: { remote_node: 'pa', remote_connect_timeout_ms: 300 } });
    expect(named.result.error.details.reason).toMatch(/^remote_connect_(failed|timeout)$/);
    expect(await api.app.sessions.waitForRun(draining.id, 10_000)).toMatchObject({ state: 'completed', result: { text: 'drained\n' } });
    expect(await a.exited).toBe(0);
  }, 90_000);
});

describe('worker nodes: workspace files and diffs', () => {
  /** A worker serving its files (--files-port 0), a shell session working in `proj` on it, and the worker's own view of that folder. */
  async function remoteProject(apiEnv: Record<string, string> = {}) {
    const d = deployment();
    const api = await d.api(apiEnv);
    const shadowRoot = join(scratchDir('asm-worker-shadow-'), 'shadow');
    const worker = await d.worker(api, 'w1', ['--files-port', '0'], { ASM_SHADOW_ROOT: shadowRoot });
    await waitFor(async () => (await reply(api.client.GET('/v1/nodes'))).body.nodes.some((n: any) => n.name === 'w1' && n.files_url), 'w1 to announce its files endpoint', 10_000);
    const project = join(worker.root, 'proj');
    mkdirSync(project);
    const s = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1', remote_cwd: 'proj' } });
    return { d, api, worker, project, shadowRoot, s, base: `/v1/sessions/${s.id}/files` };
  }

  it('uploads a tar to the worker, diffs a run there that edits two files and adds one, and downloads the result', async () => {
    const { api, project, shadowRoot, s, base } = await remoteProject();
    // Raw fetch for uploads: the archive or file is the raw body, which the client's types do not take.
    const up = await fetch(`${api.url}${base}`, { method: 'POST', headers: { 'content-type': 'application/x-tar' }, body: tarOf(PROJECT, { gzip: true }) });
    expect(up.status).toBe(201);
    expect(await up.json()).toEqual({ files: 2, directories: 1, bytes: 12 });
    // On the worker's disk, not the API's.
    expect(readFileSync(join(project, 'dir', 'b.txt'), 'utf8')).toBe('bee\n');
    const put = await fetch(`${api.url}${base}/notes/todo.md`, { method: 'PUT', body: 'later\n' });
    expect(put.status).toBe(201);
    expect(readFileSync(join(project, 'notes', 'todo.md'), 'utf8')).toBe('later\n');
    // The worker prepares the session's first snapshot after an upload, off the run's path.
    await waitFor(() => existsSync(join(shadowRoot, s.id)), 'the worker to prime the snapshot', 10_000);

    const done = await runToEnd(api, s.id, { prompt: "sed -i 's/two/TWO/' a.txt && echo sea >> dir/b.txt && printf 'new\\n' > c.txt" });
    expect(done).toMatchObject({ state: 'completed', result: { metadata: { node: 'w1' } } });
    const events = (await reply(api.client.GET('/v1/runs/{id}/events', { params: { path: { id: done.id } } }))).body.events;
    expect(events.map((e: any) => e.kind).slice(-2)).toEqual(['workspace_diff', 'result']);
    const diff = (await reply(api.client.GET('/v1/runs/{id}/diff', { params: { path: { id: done.id } } }))).body.summary;
    expect(diff.files.map((f: any) => `${f.status} ${f.path} +${f.additions} -${f.deletions}`)).toEqual(['modified a.txt +1 -1', 'added c.txt +1 -0', 'modified dir/b.txt +1 -0']);
    const patch = await reply(api.client.GET('/v1/sessions/{id}/diff', { params: { path: { id: s.id } }, headers: { accept: 'text/x-diff' }, parseAs: 'text' }));
    expect(patch.body).toContain('-two\n+TWO');
    // The snapshots were taken on the worker, in its own shadow root.
    expect(readdirSync(shadowRoot)).toEqual([s.id]);

    const fileAt = (path: string, parseAs: 'text' | 'arrayBuffer' = 'text', accept = '*/*') =>
      reply(api.client.GET('/v1/sessions/{id}/files/{*}', { params: { path: { id: s.id, '*': path } }, headers: { accept }, parseAs }));
    const folderOf = (query: { path?: string; limit?: number; cursor?: string }, accept = 'application/json') =>
      reply(api.client.GET('/v1/sessions/{id}/files', { params: { path: { id: s.id }, query }, headers: { accept }, parseAs: accept === 'application/json' ? 'json' : 'arrayBuffer' }));
    const file = await fileAt('a.txt');
    expect(file.status).toBe(200);
    expect(file.headers.get('content-length')).toBe('8');
    expect(file.body).toBe('one\nTWO\n');
    const listing = await folderOf({ limit: 2 });
    expect(listing.body.entries.map((e: any) => `${e.type} ${e.name}`)).toEqual(['file a.txt', 'file c.txt']);
    const rest = await folderOf({ limit: 2, cursor: listing.body.next_cursor });
    expect(rest.body).toMatchObject({ entries: [{ name: 'dir', type: 'directory' }, { name: 'notes', type: 'directory' }], next_cursor: null });
    const folder = await fileAt('dir', 'arrayBuffer', 'application/x-tar');
    expect(await entriesOf(Buffer.from(folder.body as ArrayBuffer))).toEqual(new Map([['', 'Directory'], ['b.txt', 'bee\nsea\n']]));
    const all = await folderOf({}, 'application/x-tar');
    expect([...(await entriesOf(Buffer.from(all.body as ArrayBuffer))).keys()].sort()).toEqual(['', 'a.txt', 'c.txt', 'dir', 'dir/b.txt', 'notes', 'notes/todo.md']);
    expect((await fileAt('dir')).status).toBe(409);
    expect((await fileAt('missing.txt')).status).toBe(404);

    // Bytes of many chunks go through unchanged, both ways.
    const blob = randomBytes(3 * 1024 * 1024 + 17);
    const stored = await fetch(`${api.url}${base}/blob.bin`, { method: 'PUT', body: blob });
    expect(await stored.json()).toEqual({ files: 1, directories: 0, bytes: blob.length });
    expect(readFileSync(join(project, 'blob.bin')).equals(blob)).toBe(true);
    const back = Buffer.from((await fileAt('blob.bin', 'arrayBuffer')).body as ArrayBuffer);
    expect(back.equals(blob)).toBe(true);
  }, 60_000);

  it('refuses `..`, absolute paths, symlinks and hostile tars on the worker, and 413 past the upload bounds', async () => {
    const { api, worker, project, s, base } = await remoteProject({ ASM_MAX_UPLOAD_BYTES: '1024', ASM_MAX_UPLOAD_FILES: '3' });
    const outside = join(worker.root, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret'), 'keep');
    // Raw requests: paths with `..` and `//`, which fetch (and so the client) would resolve before sending.
    for (const path of [`${base}/../../x`, `${base}/%2e%2e/x`, `${base}//tmp/asm-remote-abs`]) {
      const res = await rawRequest(api.url, 'PUT', path, 'evil');
      expect(res.status, `${path}: ${JSON.stringify(res.body)}`).toBe(403);
    }
    expect((await reply(api.client.GET('/v1/sessions/{id}/files', { params: { path: { id: s.id }, query: { path: '..' } } }))).status).toBe(403);
    symlinkSync(outside, join(project, 'out'));
    symlinkSync(join(outside, 'secret'), join(project, 'secret-link'));
    // Raw requests: one loop over both methods, the PUTs with raw bodies.
    for (const [method, path] of [['PUT', `${base}/out/new`], ['PUT', `${base}/secret-link`], ['GET', `${base}/secret-link`], ['GET', `${base}/out/secret`], ['GET', `${base}?path=out`]]) {
      const res = await rawRequest(api.url, method, path, method === 'PUT' ? 'evil' : undefined);
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBe(403);
      expect(res.body.error.kind).toBe('forbidden');
    }
    // Raw fetch for uploads: the archive or file is the raw body, which the client's types do not take.
    for (const entries of [[{ path: '../x', body: 'evil' }], [{ path: join(outside, 'abs'), body: 'evil' }], [{ path: 'link', type: 'SymbolicLink' as const, linkpath: outside }]]) {
      const res = await fetch(`${api.url}${base}`, { method: 'POST', body: tarOf(entries) });
      expect(res.status, JSON.stringify(entries)).toBe(403);
    }
    expect(readdirSync(outside)).toEqual(['secret']);
    expect(readFileSync(join(outside, 'secret'), 'utf8')).toBe('keep');
    expect(existsSync(join(worker.root, 'x'))).toBe(false);

    // The API's bounds hold on the worker: past them 413, with the rest of the body read.
    const big = await fetch(`${api.url}${base}/big.bin`, { method: 'PUT', body: Buffer.alloc(256 * 1024, 1) });
    expect(big.status).toBe(413);
    expect(((await big.json()) as any).error.kind).toBe('payload_too_large');
    const many = await fetch(`${api.url}${base}`, { method: 'POST', body: tarOf(['a', 'b', 'c', 'd'].map((path) => ({ path, body: path }))) });
    expect(many.status).toBe(413);
    expect((await fetch(`${api.url}${base}/fits.txt`, { method: 'PUT', body: 'ok' })).status).toBe(201);
  }, 60_000);

  it('a new session gets its own workspace on the worker: a git clone (the worker\'s URL policy) or an empty folder for a tar', async () => {
    const d = deployment();
    const api = await d.api();
    const shadowRoot = join(scratchDir('asm-worker-shadow-'), 'shadow');
    const worker = await d.worker(api, 'w1', ['--files-port', '0'], { ASM_WORKSPACE_GIT_SCHEMES: 'file', ASM_SHADOW_ROOT: shadowRoot });
    await waitFor(async () => (await api.request('GET', '/v1/nodes')).body.nodes.some((n: any) => n.name === 'w1' && n.files_url), 'w1 to announce its files endpoint', 10_000);
    const repo = scratchDir('asm-remote-repo-');
    cleanups.push(() => rmSync(repo, { recursive: true, force: true }));
    const git = (...args: string[]) => execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { cwd: repo });
    git('init', '--quiet', '-b', 'main');
    writeFileSync(join(repo, 'a.txt'), 'from git\n');
    git('add', '.');
    git('commit', '--quiet', '-m', 'one');
    git('tag', 'v1');
    writeFileSync(join(repo, 'a.txt'), 'newer\n');
    git('commit', '--quiet', '-am', 'two');

    // Cloned on the worker (file:// is allowed there, not on the API), at the tag; its runs work in it.
    const cloned = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' }, workspace: { git: { url: `file://${repo}`, ref: 'v1' } } });
    expect(cloned.driver_opts.remote_cwd).toMatch(new RegExp(`(^|/)${cloned.id}$`));
    const clonedDir = join(worker.root, cloned.driver_opts.remote_cwd);
    expect(readFileSync(join(clonedDir, 'a.txt'), 'utf8')).toBe('from git\n');
    expect(existsSync(cloned.cwd)).toBe(false);
    // The worker prepares the first snapshot of the clone when it makes it, off the first run's path.
    await waitFor(() => existsSync(join(shadowRoot, cloned.id)), 'the worker to prime the snapshot', 10_000);
    const edited = await runToEnd(api, cloned.id, { prompt: 'cat a.txt && echo more >> a.txt' });
    expect(edited).toMatchObject({ state: 'completed', result: { text: 'from git\n', metadata: { node: 'w1' } } });
    const diff = (await api.request('GET', `/v1/runs/${edited.id}/diff`)).body.summary;
    expect(diff.files.map((f: any) => `${f.status} ${f.path} +${f.additions} -${f.deletions}`)).toEqual(['modified a.txt +1 -0']);
    expect(readFileSync(join(repo, 'a.txt'), 'utf8')).toBe('newer\n');

    // An empty folder of its own, filled over the API.
    const empty = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' }, workspace: { archive_upload: true } });
    const emptyDir = join(worker.root, empty.driver_opts.remote_cwd);
    expect(readdirSync(emptyDir)).toEqual([]);
    const up = await fetch(`${api.url}/v1/sessions/${empty.id}/files`, { method: 'POST', body: tarOf(PROJECT) });
    expect(up.status).toBe(201);
    expect(readFileSync(join(emptyDir, 'dir', 'b.txt'), 'utf8')).toBe('bee\n');
    const added = await runToEnd(api, empty.id, { prompt: 'cat dir/b.txt && printf "new\\n" > c.txt' });
    expect(added.result.text).toBe('bee\n');
    expect((await api.request('GET', `/v1/runs/${added.id}/diff`)).body.summary.files.map((f: any) => `${f.status} ${f.path}`)).toEqual(['added c.txt']);
    expect(await (await fetch(`${api.url}/v1/sessions/${empty.id}/files/c.txt`)).text()).toBe('new\n');

    // Refused, naming the field, and no session: a clone that fails, a scheme the worker does not allow,
    // a remote_cwd besides, a pool, a worker without the files endpoint.
    const refusal = async (body: RequestBody<'/v1/sessions', 'post'>) => (await reply(api.client.POST('/v1/sessions', { body }))) as any;
    const remote = { provider: 'shell', execution_mode: 'remote_node' } as const;
    const missing = await refusal({ ...remote, driver_opts: { remote_node: 'w1' }, workspace: { git: { url: `file://${repo}-missing` } } });
    expect(missing.status).toBe(400);
    expect(missing.body.error.details.field).toBe('workspace.git');
    const scheme = await refusal({ ...remote, driver_opts: { remote_node: 'w1' }, workspace: { git: { url: 'ssh://example.invalid/repo.git' } } });
    expect(scheme.status).toBe(403);
    expect(scheme.body.error.details.field).toBe('workspace.git.url');
    const both = await refusal({ ...remote, driver_opts: { remote_node: 'w1', remote_cwd: 'proj' }, workspace: { archive_upload: true } });
    expect(both.status).toBe(400);
    expect(both.body.error.details.field).toBe('workspace');
    const pooled = await refusal({ ...remote, driver_opts: { remote_node: 'pool:default' }, workspace: { archive_upload: true } });
    expect(pooled.status).toBe(409);
    expect(pooled.body.error.details.field).toBe('workspace');
    await d.worker(api, 'quiet');
    const noEndpoint = await refusal({ ...remote, driver_opts: { remote_node: 'quiet' }, workspace: { archive_upload: true } });
    expect(noEndpoint.status).toBe(409);
    expect(noEndpoint.body.error).toMatchObject({ details: { field: 'workspace' } });
    expect(noEndpoint.body.error.message).toContain('--files-port');
    // Only the two sessions above hold workspaces on w1.
    expect(readdirSync(join(clonedDir, '..')).filter((name) => name.startsWith('ses_')).sort()).toEqual([cloned.id, empty.id].sort());
  }, 90_000);

  it('which worker: a pool session is refused naming driver_opts.remote_node; a worker without --files-port, a wrong token and a wrong cookie are refused', async () => {
    const { d, api } = await remoteProject();
    await d.worker(api, 'quiet', ['--pool', 'p2', '--cookie', 'sesame']);
    const pooled = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'pool:p2' } });
    const refused = await reply(api.client.GET('/v1/sessions/{id}/files', { params: { path: { id: pooled.id } } }));
    expect(refused.status).toBe(409);
    expect(refused.body.error.details.field).toBe('driver_opts.remote_node');
    const quiet = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'quiet', remote_cookie: 'sesame' } });
    const noEndpoint = await reply(api.client.GET('/v1/sessions/{id}/files', { params: { path: { id: quiet.id } } }));
    expect(noEndpoint.status).toBe(409);
    expect(noEndpoint.body.error.message).toContain('--files-port');
    const wrongCookie = await session(api, { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'quiet', remote_cookie: 'nope' } });
    expect((await reply(api.client.GET('/v1/sessions/{id}/files', { params: { path: { id: wrongCookie.id } } }))).body.error.details.field).toBe('driver_opts.remote_cookie');
    // The endpoint itself answers only the token of its heartbeat, which GET /v1/nodes never shows.
    const w1 = (await reply(api.client.GET('/v1/nodes'))).body.nodes.find((n: any) => n.name === 'w1');
    expect(w1.files_token).toBeUndefined();
    // Raw fetch: the worker's own endpoint, not a route of the API (openapi.json).
    const direct = await fetch(`${w1.files_url}/internal/files/list?cwd=.&path=&limit=10`, { headers: { authorization: 'Bearer guessed' } });
    expect(direct.status).toBe(401);
  }, 60_000);
});
