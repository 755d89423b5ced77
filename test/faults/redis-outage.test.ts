import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startRedisServer } from '../helpers/redis-server.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { workerProcess, type ServeProcess } from '../helpers/processes.js';
import { scratchDir } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';
import { killQuietly, processesWith, sleepMarker } from './processes.js';

/**
 * A Redis outage longer than ASM_NODE_TTL_MS: every heartbeat stops while Redis is away, so every
 * node key has expired when it returns. Runs of live processes go on and complete; a worker really
 * killed during the outage is still found lost, a TTL after Redis is back. Found by the fault probe
 * (issue 13, finding 4: the first sweep after the outage ended every healthy run node_lost).
 */

const TTL_MS = 1_500;
const CLUSTER_ENV = { ASM_NODE_HEARTBEAT_MS: '200', ASM_NODE_TTL_MS: String(TTL_MS), ASM_SWEEP_MS: '100', ASM_REDIS_OUTAGE_MS: '60000' };
const cleanups: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function worker(name: string, env: Record<string, string>): ServeProcess {
  const dir = scratchDir(`asm-outage-${name}-`);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const root = join(dir, 'root');
  mkdirSync(root);
  const started = workerProcess(['--name', name, '--workspace-root', root], env);
  cleanups.push(() => void started.child.kill('SIGKILL'));
  return started;
}

async function runState(api: TestServer, runId: string): Promise<string> {
  return (await api.request('GET', `/v1/runs/${runId}`)).body.state as string;
}

describe('a Redis outage longer than the node TTL', () => {
  it('ends no healthy run node_lost, and still finds a worker killed meanwhile lost', async () => {
    const redis = await startRedisServer({ args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'] });
    cleanups.push(() => redis.dispose());
    const env = { REDIS_URL: redis.url, ASM_REDIS_PREFIX: 'outage', ...CLUSTER_ENV };
    const a = await startServer(env);
    cleanups.push(() => a.close());
    const b = await startServer(env);
    cleanups.push(() => b.close());
    const kept = worker('kept', env);
    const doomed = worker('doomed', env);
    await waitFor(
      async () => {
        for (const w of [kept, doomed]) if (w.child.exitCode !== null) throw new Error(`worker exited:\n${w.output()}`);
        const nodes = (await a.request('GET', '/v1/nodes')).body.nodes as any[];
        return ['kept', 'doomed'].every((name) => nodes.some((n) => n.name === name && n.state === 'ready'));
      },
      'both workers to be ready',
      30_000,
    );

    const marker = sleepMarker();
    cleanups.push(() => {
      for (const pid of processesWith(marker)) killQuietly(pid);
    });
    // Each run sleeps through the outage, then prints: its events after it must be written normally.
    const prompt = `: ${marker}; sleep 8; echo finished`;
    const start = async (api: TestServer, body: Record<string, unknown>) => {
      const session = await api.request('POST', '/v1/sessions', { provider: 'shell', ...body });
      expect(session.status).toBe(201);
      const run = await api.request('POST', `/v1/sessions/${session.body.id}/runs`, { prompt });
      expect(run.status).toBe(202);
      return run.body.id as string;
    };
    const healthy = [await start(a, {}), await start(a, {}), await start(b, {}), await start(b, {})];
    healthy.push(await start(a, { execution_mode: 'remote_node', driver_opts: { remote_node: 'kept' } }));
    const orphan = await start(b, { execution_mode: 'remote_node', driver_opts: { remote_node: 'doomed' } });
    await waitFor(async () => {
      for (const id of [...healthy, orphan]) if ((await runState(a, id)) !== 'running') return false;
      return true;
    }, 'every run to be running', 30_000);

    await redis.stop();
    // The kept worker comes back a second after Redis (a process slower to reconnect than the others):
    // still well within a TTL, so it is alive. Its run's CLI goes on meanwhile, in its own process.
    kept.child.kill('SIGSTOP');
    cleanups.push(() => void kept.child.kill('SIGCONT'));
    doomed.child.kill('SIGKILL');
    await doomed.exited;
    await new Promise((resolve) => setTimeout(resolve, 2 * TTL_MS + 1_000)); // the outage itself: longer than the TTL
    const back = Date.now();
    await redis.start();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    kept.child.kill('SIGCONT');
    for (const api of [a, b]) await waitFor(async () => (await api.request('GET', '/readyz')).status === 200, 'the API to be ready again', 15_000);

    const lostAfter = a.app.sessions.waitForRun(orphan, 30_000).then((run) => ({ run, ms: Date.now() - back }));
    for (const id of healthy) {
      const run = await a.app.sessions.waitForRun(id, 30_000);
      expect(run, `run ${id}`).toMatchObject({ state: 'completed' });
      expect(run.result?.text).toContain('finished');
    }
    const lost = await lostAfter;
    expect(lost.run).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost' } } });
    // Found lost once live instances had a TTL to heartbeat again after Redis came back, and not much later.
    expect(lost.ms).toBeLessThan(TTL_MS + 5_000);
  }, 120_000);
});
