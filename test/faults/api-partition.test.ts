/**
 * A network partition between an API process and Redis, made for real as test/e2e/partition.test.ts
 * makes one for a worker: `asm serve` (P) runs in a network namespace of its own, joined to the root
 * namespace by a veth pair on a private /30, and reaches a dedicated redis-server through the host
 * side's address; the test talks to P over its namespace's loopback (`ip netns exec … curl`), which
 * the partition leaves alone. A second API process (R, in process) shares P's Redis and prefix from
 * the root namespace. Runs flow through both, and taking the host side of the veth down cuts P off
 * mid-run without killing it:
 *
 * - P's /readyz says not ready while R goes on serving, and R's runs complete;
 * - R ends every run P executes node_lost within ASM_NODE_TTL_MS + ASM_SWEEP_MS, one terminal event each;
 * - when the link comes back P is ready again without a restart, writes nothing more for the runs
 *   ended elsewhere, stops their CLIs, and serves new runs, those R accepts included: the cut lasts
 *   PARTITION_MS, after which Redis resends what it wrote into the cut on P's signals connection only
 *   on its TCP retransmission backoff (over 13 s later after a 35 s cut, bench/RESULTS.md), and P,
 *   stalled on it, would hear of no job meanwhile.
 *
 * Every accepted run is counted: each reaches exactly one terminal state, with one terminal event.
 * Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) for the namespace; without it the test skips and
 * says why. Only what this file created is removed: its namespace, veth pair and redis-server.
 */
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, terminalEvents, type TestServer } from '../helpers/server.js';
import { serveProcess, type ServeProcess } from '../helpers/processes.js';
import { openNamespace, type Namespace } from '../helpers/netns.js';
import { freePort } from '../helpers/ports.js';
import { scratchDir } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';
import { killQuietly, processesWith, sleepers, sleepMarker } from './processes.js';

const HEARTBEAT_MS = 200;
const TTL_MS = 1_500;
const SWEEP_MS = 100;
/** How long the cut lasts: long enough that, before the fix, P heard nothing while R's first runs took 5 s. */
const PARTITION_MS = 30_000;
/** The documented bound is TTL + sweep; the rest is scheduling slack on a loaded 2-core machine. */
const LOST_WITHIN_MS = TTL_MS + SWEEP_MS + 1_500;
const CLUSTER_ENV = {
  ASM_NODE_HEARTBEAT_MS: String(HEARTBEAT_MS),
  ASM_NODE_TTL_MS: String(TTL_MS),
  ASM_SWEEP_MS: String(SWEEP_MS),
  ASM_JOB_LOCK_MS: '2000',
  ASM_STALLED_INTERVAL_MS: '1000',
};

const run = promisify(execFile);

let missing = '';
let ns: Namespace | undefined;
let api: TestServer | undefined;
let partitioned: ServeProcess | undefined;
let pPort = 0;
let dir = '';
const marker = sleepMarker();

/** A request to P, from inside its namespace (its loopback), so that it reaches P during the partition too. */
async function onP(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const args = ['netns', 'exec', ns!.name, 'curl', '-s', '--max-time', '10', '-X', method, '-w', '\n%{http_code}', `http://127.0.0.1:${pPort}${path}`];
  if (body !== undefined) args.push('-H', 'content-type: application/json', '--data', JSON.stringify(body));
  const { stdout } = await run('ip', args);
  const cut = stdout.lastIndexOf('\n');
  const text = stdout.slice(0, cut);
  return { status: Number(stdout.slice(cut + 1)), body: text ? JSON.parse(text) : null };
}

beforeAll(async () => {
  const opened = await openNamespace('apart');
  if ('missing' in opened) {
    missing = opened.missing;
    return;
  }
  ns = opened;
  dir = scratchDir('asm-api-partition-');
}, 30_000);

afterAll(async () => {
  if (partitioned && partitioned.child.exitCode === null && partitioned.child.signalCode === null) {
    partitioned.child.kill('SIGKILL');
    await partitioned.exited;
  }
  await ns?.dispose();
  for (const pid of processesWith(marker)) killQuietly(pid);
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 30_000);

describe('partition: an API process cut off from Redis', () => {
  it('is not ready while cut off; the other API ends its runs node_lost once; healed, it fences them and serves again', async (context) => {
    if (missing) return context.skip(missing);
    const shared = { ASM_REDIS_PREFIX: ns!.name, ...CLUSTER_ENV };
    pPort = await freePort();
    partitioned = serveProcess(
      { ...shared, REDIS_URL: ns!.redisUrlInside, ASM_PORT: String(pPort), ASM_NODE_NAME: 'api-p', ASM_WORKSPACE_ROOT: dir },
      ns!.launcher,
    );
    const p = partitioned;
    await waitFor(
      async () => {
        if (p.child.exitCode !== null) throw new Error(`P exited:\n${p.output()}`);
        return (await onP('GET', '/readyz').catch(() => ({ status: 0 }))).status === 200;
      },
      'P to be ready in its namespace',
      30_000,
    );
    const accepted: string[] = [];
    const submit = async (via: 'P' | 'R', prompt: string): Promise<string> => {
      const body = { prompt };
      if (via === 'P') {
        const session = await onP('POST', '/v1/sessions', { provider: 'shell' });
        expect(session.status, JSON.stringify(session.body)).toBe(201);
        const created = await onP('POST', `/v1/sessions/${session.body.id}/runs`, body);
        expect(created.status, JSON.stringify(created.body)).toBe(202);
        accepted.push(created.body.id);
        return created.body.id;
      }
      const session = await api!.request('POST', '/v1/sessions', { provider: 'shell' });
      expect(session.status, JSON.stringify(session.body)).toBe(201);
      const created = await api!.request('POST', `/v1/sessions/${session.body.id}/runs`, body);
      expect(created.status, JSON.stringify(created.body)).toBe(202);
      accepted.push(created.body.id);
      return created.body.id;
    };
    const events = async (runId: string) => (await api!.request('GET', `/v1/runs/${runId}/events`)).body.events as any[];
    const eventsOnP = async (runId: string) => (await onP('GET', `/v1/runs/${runId}/events`)).body.events as any[];
    const printed = (runId: string, read = events) => waitFor(async () => (await read(runId)).some((e) => e.kind === 'assistant_delta'), `run ${runId} to print`, 15_000);

    // P alone takes its prompt lane's two runs (its CLIs sleep until stopped); then R joins.
    const onPBefore = [await submit('P', `echo started; sleep ${marker}`), await submit('P', `echo started; sleep ${marker}`)];
    for (const runId of onPBefore) await printed(runId, eventsOnP);
    // Both APIs serve one deployment, so one workspace root: either may execute a run the other accepted.
    api = await startServer({ ...shared, REDIS_URL: ns!.redis.url, ASM_NODE_NAME: 'api-r', ASM_WORKSPACE_ROOT: dir });
    const r = api;
    // P's lane is full, so R executes these: they sleep through the partition and finish after it began.
    const onRBefore = [await submit('R', 'echo started; sleep 4; echo finished'), await submit('R', 'echo started; sleep 4; echo finished')];
    for (const runId of onRBefore) await printed(runId);
    const owners = new Map<string, string>();
    for (const runId of [...onPBefore, ...onRBefore]) owners.set(runId, (await r.app.store.runs.get(runId))!.owner!);
    const pSelf = owners.get(onPBefore[0])!;
    expect(pSelf).not.toBe(r.app.cluster.self);
    expect(onPBefore.map((runId) => owners.get(runId))).toEqual([pSelf, pSelf]);
    expect(onRBefore.map((runId) => owners.get(runId))).toEqual([r.app.cluster.self, r.app.cluster.self]);
    expect(sleepers(marker)).toHaveLength(2);

    ns!.cut();
    const cutAt = Date.now();
    // Runs keep flowing through R while P is away.
    const onRDuring = [await submit('R', 'echo during'), await submit('R', 'echo during')];
    const lost = await Promise.all(onPBefore.map(async (runId) => ({ run: await r.app.sessions.waitForRun(runId, 15_000), after: Date.now() - cutAt })));
    for (const { run, after } of lost) {
      expect(run).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost', details: { node: pSelf } } } });
      expect(after).toBeLessThan(LOST_WITHIN_MS);
    }
    // P is alive, only unreachable: not ready, and it says why.
    const notReady = await onP('GET', '/readyz');
    expect(notReady.status, JSON.stringify(notReady.body)).toBe(503);
    expect(notReady.body.status).toBe('not_ready');
    expect(p.child.exitCode).toBeNull();
    expect((await r.request('GET', '/readyz')).status).toBe(200);
    for (const runId of [...onRBefore, ...onRDuring]) {
      expect(await r.app.sessions.waitForRun(runId, 20_000), `run ${runId} on R`).toMatchObject({ state: 'completed' });
    }
    // P's CLIs still run: P cannot know yet that its runs were ended.
    expect(sleepers(marker)).toHaveLength(2);
    const beforeHeal = new Map<string, number[]>();
    for (const runId of onPBefore) beforeHeal.set(runId, (await events(runId)).map((e) => e.seq));

    await new Promise((resolve) => setTimeout(resolve, cutAt + PARTITION_MS - Date.now()));
    ns!.heal();
    const healedAt = Date.now();
    await waitFor(async () => (await onP('GET', '/readyz')).status === 200, 'P to be ready again without a restart', 20_000);
    await waitFor(() => sleepers(marker).length === 0, 'P to stop the CLIs of the runs ended elsewhere', 20_000);
    const recovered = Date.now() - healedAt;
    // Give a late write every chance to land, then check nothing did.
    await new Promise((resolve) => setTimeout(resolve, 3 * HEARTBEAT_MS));
    for (const runId of onPBefore) {
      expect((await events(runId)).map((e) => e.seq), `events of ${runId} after the heal`).toEqual(beforeHeal.get(runId));
      expect((await r.app.store.runs.get(runId))!.state).toBe('failed');
    }
    expect(p.output()).toContain('run was ended elsewhere while this instance was unreachable');
    expect(p.child.exitCode).toBeNull();

    // R's three `skill` slots (a shell run's lane) cannot take four runs at once: P executes one, hearing
    // of it on its signals stream, whose connection stalled in the cut (src/lanes/bullmq/signals.ts).
    const four: string[] = [];
    for (let i = 0; i < 4; i++) four.push(await submit('R', 'sleep 5'));
    const fourRuns = await Promise.all(four.map((runId) => r.app.sessions.waitForRun(runId, 30_000)));
    expect(fourRuns.map((run) => run.state)).toEqual(['completed', 'completed', 'completed', 'completed']);
    const whoRan = fourRuns.map((run) => `${run.owner === pSelf ? 'P' : 'R'} from ${run.started_at}`).join(', ');
    expect(fourRuns.filter((run) => run.owner === pSelf).length, whoRan).toBeGreaterThan(0);

    // P serves again: with R gone, P is the only process that can execute what it accepts.
    const onRAfter = await submit('R', 'echo after');
    const after = await r.app.sessions.waitForRun(onRAfter, 20_000);
    expect(after, JSON.stringify(after.result?.error)).toMatchObject({ state: 'completed' });
    await r.close();
    api = undefined;
    const onPAfter = await submit('P', 'echo after');
    const done = await waitFor(async () => {
      const got = await onP('GET', `/v1/runs/${onPAfter}`);
      return got.body?.state === 'completed' && got.body;
    }, 'P to execute a new run after the heal', 20_000);
    expect(done.result.text).toContain('after');

    // Every accepted run: one terminal state and exactly one terminal event.
    for (const runId of accepted) {
      const got = await onP('GET', `/v1/runs/${runId}`);
      expect(['completed', 'failed'], `run ${runId}`).toContain(got.body.state);
      const all = (await onP('GET', `/v1/runs/${runId}/events`)).body.events as any[];
      expect(terminalEvents(all, runId), `terminal events of ${runId}`).toHaveLength(1);
    }
    expect(accepted).toHaveLength(12);
    console.log(`api-partition: accepted ${accepted.length} runs, ${accepted.length} terminal; P's 2 node_lost in ${lost.map((l) => l.after).join(', ')} ms; P recovered in ${recovered} ms`);
  }, 180_000);
});
