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
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reply, startServer, terminalEvents, type TestServer } from '../helpers/server.js';
import { workerProcess, type ServeProcess } from '../helpers/processes.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';

const HEARTBEAT_MS = 200;
const TTL_MS = 1_500;
const SWEEP_MS = 100;
/** The documented bound is TTL + sweep; the rest is scheduling slack on a loaded 2-core machine. */
const LOST_WITHIN_MS = TTL_MS + SWEEP_MS + 1_000;
const CLUSTER_ENV = { ASM_NODE_HEARTBEAT_MS: String(HEARTBEAT_MS), ASM_NODE_TTL_MS: String(TTL_MS), ASM_SWEEP_MS: String(SWEEP_MS) };

const id = randomBytes(4).toString('hex');
const ns = `asm-part-${id}`;
// Interface names are at most 15 bytes.
const hostVeth = `asmp${id}h`;
const nodeVeth = `asmp${id}n`;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' }).toString();
const quietly = (work: () => unknown) => {
  try {
    work();
  } catch {
    // cleanup of something that may not exist (a failed setup, or already gone with the namespace)
  }
};

/** A 10.213.N.0/30 that no interface of the root namespace uses yet. */
function freeSubnet(): string {
  const used = ip('-o', '-4', 'addr', 'show');
  for (let tries = 0; tries < 64; tries++) {
    const subnet = `10.213.${Math.floor(Math.random() * 256)}`;
    if (!used.includes(`${subnet}.`)) return subnet;
  }
  throw new Error('no free 10.213.N.0/30 subnet');
}

let missing = '';
let subnet = '';
let redis: RedisServer | undefined;
let api: TestServer | undefined;
let worker: ServeProcess | undefined;
let dir = '';

beforeAll(async () => {
  try {
    ip('netns', 'add', ns);
  } catch (err) {
    missing = `cannot create a network namespace here (ip netns add: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}); the partition test needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN`;
    return;
  }
  subnet = freeSubnet();
  ip('link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nodeVeth);
  ip('link', 'set', nodeVeth, 'netns', ns);
  ip('addr', 'add', `${subnet}.1/30`, 'dev', hostVeth);
  ip('link', 'set', hostVeth, 'up');
  ip('-n', ns, 'addr', 'add', `${subnet}.2/30`, 'dev', nodeVeth);
  ip('-n', ns, 'link', 'set', nodeVeth, 'up');
  ip('-n', ns, 'link', 'set', 'lo', 'up');
  // Without a password, protected mode refuses clients that are not on the loopback, as the worker is.
  redis = await startRedisServer({
    bind: ['127.0.0.1', `${subnet}.1`],
    args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
  });
  dir = mkdtempSync(join(tmpdir(), 'asm-partition-'));
}, 30_000);

afterAll(async () => {
  if (!missing) {
    // Every process in the namespace is the worker or a CLI it started: this file made the namespace.
    quietly(() => {
      for (const pid of ip('netns', 'pids', ns).split('\n').filter(Boolean)) quietly(() => process.kill(Number(pid), 'SIGKILL'));
    });
    if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
      worker.child.kill('SIGKILL');
      await worker.exited;
    }
    // Deleting the namespace deletes the veth end inside it, and with it the pair.
    quietly(() => ip('netns', 'delete', ns));
    quietly(() => ip('link', 'delete', hostVeth));
  }
  await api?.close();
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 30_000);

describe('partition: a worker cut off from Redis', () => {
  it('ends its running run with node_lost within TTL + sweep, with exactly one terminal event', async (context) => {
    if (missing) return context.skip(missing);
    const prefix = `part-${id}`;
    api = await startServer({ REDIS_URL: redis!.url, ASM_REDIS_PREFIX: prefix, ...CLUSTER_ENV });
    const root = join(dir, 'worker-root');
    mkdirSync(root);
    worker = workerProcess(
      ['--name', 'netns-w1', '--workspace-root', root],
      { REDIS_URL: `redis://${subnet}.1:${redis!.port}`, ASM_REDIS_PREFIX: prefix, ...CLUSTER_ENV },
      ['ip', 'netns', 'exec', ns],
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

    ip('link', 'set', hostVeth, 'down');
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
    const sleeping = () => {
      try {
        return ip('netns', 'pids', ns).trim().split('\n').some((pid) => pid && execFileSync('cat', [`/proc/${pid}/cmdline`]).toString().includes('sleep'));
      } catch {
        return false;
      }
    };
    expect(sleeping()).toBe(true);
    ip('link', 'set', hostVeth, 'up');
    await waitFor(() => !sleeping(), 'the worker to stop the CLI of the run it lost', 15_000);
    // Give a late write every chance to land, then check nothing did.
    await new Promise((resolve) => setTimeout(resolve, 3 * HEARTBEAT_MS));
    expect((await events()).map((e) => e.id)).toEqual(before);
    expect((await api.app.store.runs.get(run.id))!.state).toBe('failed');
    expect(w.child.exitCode).toBeNull();
    expect(w.output()).toContain('run was ended elsewhere while this instance was unreachable');
  }, 60_000);
});
