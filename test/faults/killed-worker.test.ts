import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { startServer, type TestServer } from '../helpers/server.js';
import { workerProcess, type ServeProcess } from '../helpers/processes.js';
import { scratchDir } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';
import { killQuietly, processesWith, sleepers, sleepMarker } from './processes.js';

/**
 * A worker SIGKILLed in the middle of a run: its run ends node_lost, and its CLI, with everything the
 * CLI started (a setsid daemon included), dies with it instead of running on, reparented to init.
 * Found by the fault probe (issue 13, finding 3).
 */

const redisUrl = inject('asmTestRedisUrl');
const CLUSTER_ENV = { ASM_NODE_HEARTBEAT_MS: '200', ASM_NODE_TTL_MS: '1500', ASM_SWEEP_MS: '100' };
const cleanups: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function deploy(): Promise<{ api: TestServer; worker: ServeProcess }> {
  const shared = { REDIS_URL: redisUrl, ASM_REDIS_PREFIX: `kw-${randomUUID().slice(0, 8)}`, ...CLUSTER_ENV };
  const api = await startServer(shared);
  cleanups.push(() => api.close());
  const dir = scratchDir('asm-killed-worker-');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const root = join(dir, 'root');
  mkdirSync(root);
  const worker = workerProcess(['--name', 'w1', '--workspace-root', root], shared);
  cleanups.push(() => void worker.child.kill('SIGKILL'));
  await waitFor(
    async () => {
      if (worker.child.exitCode !== null) throw new Error(`worker exited:\n${worker.output()}`);
      const nodes = (await api.request('GET', '/v1/nodes')).body.nodes as any[];
      return nodes.some((n) => n.name === 'w1' && n.state === 'ready');
    },
    'the worker to be ready',
    20_000,
  );
  return { api, worker };
}

describe('a SIGKILLed worker takes its runs\' processes with it', () => {
  it('its CLI and the CLI\'s setsid daemon are gone within 5 s, and the run ends node_lost', async () => {
    const { api, worker } = await deploy();
    const marker = sleepMarker();
    cleanups.push(() => {
      for (const pid of processesWith(marker)) killQuietly(pid);
    });
    const s = await api.request('POST', '/v1/sessions', { provider: 'shell', execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } });
    expect(s.status).toBe(201);
    const prompt = `(setsid sleep ${marker} &); echo started; sleep ${marker}`;
    const run = (await api.request('POST', `/v1/sessions/${s.body.id}/runs`, { prompt })).body;
    await waitFor(() => sleepers(marker).length === 2, 'the CLI and its daemon to run', 15_000);

    worker.child.kill('SIGKILL');
    await worker.exited;
    await waitFor(() => processesWith(marker).length === 0, `no process with ${marker} left`, 5_000);
    const lost = await api.app.sessions.waitForRun(run.id, 10_000);
    expect(lost).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost' } } });
  }, 60_000);
});
