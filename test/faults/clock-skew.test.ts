import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FAKE_CLAUDE, startServer, TERMINAL, terminalEvents, type StreamClient, type TestServer } from '../helpers/server.js';
import { workerProcess, type ServeProcess } from '../helpers/processes.js';
import { scratchDir } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Clock skew between the processes of one deployment, made for real: two `asm worker` processes run
 * under libfaketime (LD_PRELOAD, Debian package `faketime`, which .ci/run installs), one SKEW_MS
 * ahead of the host's clock and one SKEW_MS behind; the API server (in process) and Redis keep the
 * host's. Only the wall clock is faked (FAKETIME_DONT_FAKE_MONOTONIC): Node's timers run on the
 * monotonic clock, as they do on a host whose NTP is off.
 *
 * - Approval deadlines: the process that executes a run stamps its approval's expires_at, and the
 *   API processes' sweeps (src/sessions/sweeps.ts) deny it when it is past, so a deadline one process
 *   stamps is read by another. An approval on a run of each process is denied `timeout`
 *   approval_timeout_ms after it was requested: not at once (a worker behind stamped a deadline the
 *   API found past) and not SKEW_MS late (a worker ahead stamped one SKEW_MS out). Both happened
 *   before expires_at and the sweep were put on the deployment's clock (Cluster.now, Redis's TIME).
 * - Node TTLs: liveness is a Redis key's expiry (src/nodes/redis.ts), which no process's clock
 *   enters. Runs on both skewed workers and on the API outlive several TTLs and complete while the
 *   skewed processes sweep for lost runs; a skewed worker SIGKILLed mid-run is found lost within
 *   ASM_NODE_TTL_MS + ASM_SWEEP_MS.
 */

const redisUrl = inject('asmTestRedisUrl');
const SKEW_MS = 30_000;
const HEARTBEAT_MS = 200;
const TTL_MS = 1_500;
const SWEEP_MS = 100;
const APPROVAL_TIMEOUT_MS = 4_000;
/** Scheduling slack on a loaded 2-core machine, beyond the documented bounds; far below SKEW_MS. */
const SLACK_MS = 1_500;
const CLUSTER_ENV = { ASM_NODE_HEARTBEAT_MS: String(HEARTBEAT_MS), ASM_NODE_TTL_MS: String(TTL_MS), ASM_SWEEP_MS: String(SWEEP_MS) };

/** Where Debian's libfaketime is (its multiarch folder), or a failure that says how to get it. */
function libfaketime(): string {
  let files = '';
  try {
    files = execFileSync('dpkg', ['-L', 'libfaketime'], { stdio: 'pipe' }).toString();
  } catch {
    // not installed: the failure below says so
  }
  const lib = files.split('\n').find((f) => f.endsWith('/libfaketime.so.1') && existsSync(f));
  if (!lib) throw new Error('libfaketime is not installed: apt-get install faketime (.ci/run installs it)');
  return lib;
}

const prefix = `skew-${randomUUID().slice(0, 8)}`;
const shared = { REDIS_URL: redisUrl, ASM_REDIS_PREFIX: prefix, ...CLUSTER_ENV };
let api: TestServer;
const workers = new Map<string, ServeProcess>();
const dirs: string[] = [];
const streams: StreamClient[] = [];

function skewedWorker(name: string, skewMs: number): ServeProcess {
  const dir = scratchDir(`asm-skew-${name}-`);
  dirs.push(dir);
  const root = join(dir, 'root');
  mkdirSync(root);
  const offset = `${skewMs > 0 ? '+' : '-'}${Math.abs(skewMs) / 1000}s`;
  const worker = workerProcess(['--name', name, '--workspace-root', root], {
    ...shared,
    ASM_CLAUDE_BIN: FAKE_CLAUDE,
    LD_PRELOAD: libfaketime(),
    FAKETIME: offset,
    FAKETIME_DONT_FAKE_MONOTONIC: '1',
  });
  workers.set(name, worker);
  return worker;
}

beforeAll(async () => {
  api = await startServer(shared);
  skewedWorker('ahead', SKEW_MS);
  skewedWorker('behind', -SKEW_MS);
  const nodes = await waitFor(
    async () => {
      for (const [name, w] of workers) if (w.child.exitCode !== null) throw new Error(`worker ${name} exited:\n${w.output()}`);
      const listed = (await api.request('GET', '/v1/nodes')).body.nodes as any[];
      return ['ahead', 'behind'].every((name) => listed.some((n) => n.name === name && n.state === 'ready')) && listed;
    },
    'both skewed workers to be ready',
    30_000,
  );
  // The fake is real: each worker stamps its heartbeat with its own clock, SKEW_MS off the host's.
  const now = Date.now();
  const heartbeat = (name: string) => Date.parse(nodes.find((n) => n.name === name)!.last_heartbeat) - now;
  expect(Math.abs(heartbeat('ahead') - SKEW_MS)).toBeLessThan(SLACK_MS);
  expect(Math.abs(heartbeat('behind') + SKEW_MS)).toBeLessThan(SLACK_MS);
}, 60_000);

afterAll(async () => {
  for (const stream of streams) stream.close();
  for (const w of workers.values()) {
    if (w.child.exitCode === null && w.child.signalCode === null) {
      w.child.kill('SIGKILL');
      await w.exited;
    }
  }
  await api?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}, 30_000);

/** The sweep failures a process logged: a sweep that submits to a lane its process lacks fails every time. */
function failedSweeps(process: ServeProcess): string[] {
  return process.output().split('\n').filter((line) => /"msg":"(sweep failed|approval timeout failed)/.test(line)).map((line) => line.slice(0, 300));
}

/** A session on `node` (a worker's name, or the API process itself), watched from the API from its first event. */
async function session(provider: string, node: string | null, extra: Record<string, unknown> = {}) {
  const placement = node ? { execution_mode: 'remote_node', driver_opts: { remote_node: node } } : {};
  const created = await api.request('POST', '/v1/sessions', { provider, ...placement, ...extra });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const stream = api.stream(`session_id=${created.body.id}&after=0`);
  streams.push(stream);
  await stream.opened;
  // When each event reached this (unskewed) process: the clock the deadlines are checked on.
  const arrived = new Map<string, number>();
  stream.socket.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    if (frame.type === 'event' && !arrived.has(frame.event.kind)) arrived.set(frame.event.kind, Date.now());
  });
  const start = async (prompt: string) => {
    const run = await api.request('POST', `/v1/sessions/${created.body.id}/runs`, { prompt });
    expect(run.status, JSON.stringify(run.body)).toBe(202);
    return run.body.id as string;
  };
  return { id: created.body.id as string, stream, arrived, start };
}

describe('clock skew between the processes of a deployment', () => {
  it('expires an approval approval_timeout_ms after its request, whichever process runs it and whichever sweeps', async () => {
    const placements: Array<string | null> = ['ahead', 'behind', null];
    const outcomes = await Promise.all(
      placements.map(async (node) => {
        const s = await session('claude', node, { lane: 'core', approval_timeout_ms: APPROVAL_TIMEOUT_MS });
        const runId = await s.start('create a file [fixture:c2-approve]');
        const started = await s.stream.event('run_started', (e) => e.run_id === runId);
        const requested = await s.stream.event('approval_requested', (e) => e.run_id === runId);
        const resolved = await s.stream.next((f) => f.type === 'event' && f.event.kind === 'approval_resolved', APPROVAL_TIMEOUT_MS + SKEW_MS + 10_000);
        await s.stream.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind), 15_000);
        return {
          node,
          executedBy: started.payload.node as string,
          requested,
          resolved: resolved.event,
          requestedAt: s.arrived.get('approval_requested')!,
          elapsed: s.arrived.get('approval_resolved')! - s.arrived.get('approval_requested')!,
        };
      }),
    );
    for (const o of outcomes) {
      const where = `the run on ${o.node ?? 'the API'}`;
      expect(o.executedBy, where).toBe(o.node ?? 'test-node');
      expect(o.resolved.payload, where).toEqual({ approval_id: o.requested.payload.approval_id, decision: 'deny', reason: 'timeout' });
      // Not early: the request reached this process a little after it was stamped, so a little less than the timeout may show.
      expect(o.elapsed, `${where}: denied after ${o.elapsed} ms`).toBeGreaterThan(APPROVAL_TIMEOUT_MS - SLACK_MS);
      // Not late: the sweep runs every ASM_SWEEP_MS, and this is the bound plus slack, not plus SKEW_MS.
      expect(o.elapsed, `${where}: denied after ${o.elapsed} ms`).toBeLessThan(APPROVAL_TIMEOUT_MS + SWEEP_MS + SLACK_MS);
      // The deadline clients see is on the deployment's clock (Redis's, as this process's), not the executing process's.
      expect(Math.abs(Date.parse(o.requested.payload.expires_at) - (o.requestedAt + APPROVAL_TIMEOUT_MS)), `${where}: expires_at`).toBeLessThan(SLACK_MS);
    }
    console.log(`clock-skew: approvals denied after ${outcomes.map((o) => `${o.node ?? 'api'} ${o.elapsed} ms`).join(', ')} (approval_timeout_ms ${APPROVAL_TIMEOUT_MS})`);
    // The API processes deny expired approvals; a worker, which has no control lane, does not try.
    for (const [name, w] of workers) expect(failedSweeps(w), `worker ${name}`).toEqual([]);
  }, 120_000);

  it('declares no healthy skewed process lost, and a SIGKILLed skewed worker lost within TTL + sweep', async () => {
    // Each run outlives several TTLs while both skewed workers sweep for lost runs.
    const SLEEP_S = 4;
    const runs = await Promise.all(
      (['ahead', 'behind', null] as const).map(async (node) => {
        const s = await session('shell', node);
        return { node, s, runId: await s.start(`echo started; sleep ${SLEEP_S}; echo finished`) };
      }),
    );
    for (const { s, runId } of runs) {
      const run = await api.app.sessions.waitForRun(runId, SLEEP_S * 1000 + 20_000);
      expect(run, `run on ${s.id}`).toMatchObject({ state: 'completed' });
      expect(run.result?.text).toContain('finished');
    }
    const listed = (await api.request('GET', '/v1/nodes')).body.nodes as any[];
    expect(listed.filter((n) => n.state === 'ready').map((n) => n.name).sort()).toEqual(['ahead', 'behind', 'test-node']);

    // The worker ahead dies mid-run; a timestamp it wrote would look fresh for SKEW_MS longer, its key does not.
    const s = await session('shell', 'ahead');
    const runId = await s.start('echo started; sleep 60');
    await s.stream.event('assistant_delta');
    const owner = (await api.app.store.runs.get(runId))!.owner;
    const ahead = workers.get('ahead')!;
    ahead.child.kill('SIGKILL');
    await ahead.exited;
    const killedAt = Date.now();
    const lost = await api.app.sessions.waitForRun(runId, TTL_MS + SWEEP_MS + SKEW_MS);
    const lostAfter = Date.now() - killedAt;
    expect(lost).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost', details: { node: owner } } } });
    expect(lostAfter).toBeLessThan(TTL_MS + SWEEP_MS + SLACK_MS);
    console.log(`clock-skew: 3 runs of ${SLEEP_S} s on the skewed workers and the API completed; the SIGKILLed worker ahead found lost in ${lostAfter} ms`);
    const events = (await api.request('GET', `/v1/runs/${runId}/events`)).body.events as any[];
    expect(terminalEvents(events, runId)).toHaveLength(1);
    // The worker behind, still sweeping, took nothing of this for its own: it is still ready.
    await waitFor(async () => {
      const nodes = (await api.request('GET', '/v1/nodes')).body.nodes as any[];
      return !nodes.some((n) => n.name === 'ahead') && nodes.some((n) => n.name === 'behind' && n.state === 'ready');
    }, 'the node list to drop the killed worker and keep the other', TTL_MS + SLACK_MS);
    // The API processes end lost runs; the worker behind, which has no system lane, does not try.
    expect(failedSweeps(workers.get('behind')!)).toEqual([]);
  }, 120_000);
});
