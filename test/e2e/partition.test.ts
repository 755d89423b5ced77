/**
 * A network partition between a worker node and Redis, made for real: the worker runs in a network
 * namespace of its own, joined to the root namespace by a veth pair on a private /30, and reaches a
 * dedicated redis-server through the host side's address. The API server (in process) stays in the
 * root namespace on the loopback. Taking the host side of the veth down cuts the worker off mid-run
 * without killing it: the API must end the run with node_lost within ASM_NODE_TTL_MS + ASM_SWEEP_MS,
 * with exactly one terminal event.
 *
 * Then the link comes back while the worker's CLI still runs: the worker finds, after its heartbeat
 * lapse, that the run was ended elsewhere, stops the CLI and writes nothing more (no second terminal).
 *
 * Needs the privilege to create network namespaces (root, or CAP_SYS_ADMIN and CAP_NET_ADMIN); without
 * it the test skips and says why. Names are unique per run, and only what this file created is
 * removed: its namespace (with the processes inside it), its veth pair, its redis-server.
 */
import { readFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openNamespace, type Namespace } from '../helpers/netns.js';
import { reply, startServer, terminalEvents, type TestServer } from '../helpers/server.js';
import { workerProcess, type ServeProcess } from '../helpers/processes.js';
import { waitFor } from '../helpers/wait.js';

const HEARTBEAT_MS = 200;
const TTL_MS = 1_500;
const SWEEP_MS = 100;
/** The documented bound is TTL + sweep; the rest is scheduling slack on a loaded 2-core machine. */
const LOST_WITHIN_MS = TTL_MS + SWEEP_MS + 1_000;
const CLUSTER_ENV = { ASM_NODE_HEARTBEAT_MS: String(HEARTBEAT_MS), ASM_NODE_TTL_MS: String(TTL_MS), ASM_SWEEP_MS: String(SWEEP_MS) };

let missing = '';
let ns: Namespace | undefined;
let api: TestServer | undefined;
let worker: ServeProcess | undefined;
let dir = '';

beforeAll(async () => {
  const opened = await openNamespace('part');
  if ('missing' in opened) {
    missing = opened.missing;
    return;
  }
  ns = opened;
  dir = mkdtempSync(join(tmpdir(), 'asm-partition-'));
}, 30_000);

afterAll(async () => {
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
    worker.child.kill('SIGKILL');
    await worker.exited;
  }
  await ns?.dispose();
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 30_000);

describe('partition: a worker cut off from Redis', () => {
  it('ends its running run with node_lost within TTL + sweep, with exactly one terminal event', async (context) => {
    if (missing) return context.skip(missing);
    const prefix = `part-${ns!.name}`;
    api = await startServer({ REDIS_URL: ns!.redis.url, ASM_REDIS_PREFIX: prefix, ...CLUSTER_ENV });
    const root = join(dir, 'worker-root');
    mkdirSync(root);
    worker = workerProcess(
      ['--name', 'netns-w1', '--workspace-root', root],
      { REDIS_URL: ns!.redisUrlInside, ASM_REDIS_PREFIX: prefix, ...CLUSTER_ENV },
      ns!.launcher,
    );
    const w = worker;
    await waitFor(
      async () => {
        if (w.child.exitCode !== null) throw new Error(`worker exited:\n${w.output()}`);
        const nodes = (await reply(api!.client.GET('/v1/nodes'))).body.nodes as any[];
        return nodes.some((n) => n.name === 'netns-w1' && n.state === 'ready');
      },
      'the worker in the namespace to be ready',
      20_000,
    );

    const session = await reply(api.client.POST('/v1/sessions', { body: { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'netns-w1' } } }));
    expect(session.status, JSON.stringify(session.body)).toBe(201);
    const run = (await reply(api.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'echo started; sleep 60' } }))).body;
    const events = async () => (await reply(api!.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id } } }))).body.events as any[];
    // Mid-run: the worker has reported the CLI's first output through the veth.
    await waitFor(async () => (await events()).some((e) => e.kind === 'assistant_delta'), 'the run to print', 10_000);
    const owner = (await api.app.store.runs.get(run.id))!.owner;

    ns!.cut();
    const cutAt = Date.now();
    const lost = await api.app.sessions.waitForRun(run.id, 10_000);
    const lostAfter = Date.now() - cutAt;

    expect(lost).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost', details: { node: owner } } } });
    expect(lostAfter).toBeLessThan(LOST_WITHIN_MS);
    // The worker process is alive, only unreachable: this is a partition, not a crash.
    expect(w.child.exitCode).toBeNull();
    const terminal = terminalEvents(await events(), run.id);
    expect(terminal).toHaveLength(1);
    expect(terminal[0].payload).toMatchObject({ kind: 'node_lost' });

    // The partition heals with the CLI still running on the worker.
    const before = (await events()).map((e) => e.id);
    const sleeping = () =>
      ns!.pids().some((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('sleep');
        } catch {
          return false; // gone meanwhile
        }
      });
    expect(sleeping()).toBe(true);
    ns!.heal();
    await waitFor(() => !sleeping(), 'the worker to stop the CLI of the run it lost', 15_000);
    // Give a late write every chance to land, then check nothing did.
    await new Promise((resolve) => setTimeout(resolve, 3 * HEARTBEAT_MS));
    expect((await events()).map((e) => e.id)).toEqual(before);
    expect((await api.app.store.runs.get(run.id))!.state).toBe('failed');
    expect(w.child.exitCode).toBeNull();
    expect(w.output()).toContain('run was ended elsewhere while this instance was unreachable');
  }, 60_000);
});
