/**
 * The worker's side of a remote_node run (src/nodes/accept.ts), on a rig acting as the worker: a
 * handed run is checked, owned, queued on the worker's own lane and executed there like a local run;
 * what the worker cannot take is refused with the remote start failure that says why. ControlRouter
 * serves `start` requests through it.
 */
import { mkdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RemoteAcceptor, WORKER_LANE } from '../../src/nodes/accept.js';
import { resolveRemoteOptions } from '../../src/nodes/remote-options.js';
import { loadProviders } from '../../src/providers/registry.js';
import { ControlRouter } from '../../src/sessions/control.js';
import type { RunRecord } from '../../src/store/types.js';
import { waitFor } from '../helpers/wait.js';
import { makeRig, refusal, type Rig, type RigOptions } from './rig.js';

let rig: Rig;
afterEach(() => rig?.close());

/** A rig serving as a worker, its acceptor queueing runs on the worker lane. */
async function worker(options: { providers?: string[]; lanes?: RigOptions['lanes'] } = {}) {
  rig = await makeRig({ lanes: options.lanes ?? [{ id: WORKER_LANE, priority: 0, maxConcurrency: 1 }] });
  rig.config.worker = { pool: 'default', capacity: 1, providers: options.providers ?? null, cookie: null };
  const acceptor = new RemoteAcceptor({
    config: rig.config,
    store: rig.store,
    cluster: rig.cluster,
    providers: await loadProviders(),
    enqueue: (run) => rig.commands.submitRun(WORKER_LANE, run),
  });
  return acceptor;
}

/**
 * A remote_node run as the API process hands it over: queued, no owner, its remote payload resolved.
 * (Admitted as a local run on a paused lane whose job is then withdrawn, so only the worker lane runs it.)
 */
async function handedRun(prompt: string, remote: Record<string, unknown> = {}): Promise<RunRecord> {
  const session = await rig.session();
  await rig.engine.pause(session.queue);
  const run = await rig.submit(session.id, prompt);
  await rig.engine.cancel(run.id);
  const options = { ...run.options, execution_mode: 'remote_node' as const, remote: resolveRemoteOptions([{ remote_node: 'test-node', ...remote }]) };
  return rig.store.runs.update(run.id, { options });
}

describe('RemoteAcceptor', () => {
  it('owns the run, stamps its node, queues it on the worker lane and counts it until it ends', async () => {
    const acceptor = await worker();
    mkdirSync(join(rig.config.workspaceRoot, 'repo'));
    const run = await handedRun('hello [fixture:c1-hello]', { remote_cwd: 'repo' });
    expect(await acceptor.accept(run.id)).toEqual({ node: 'test-node' });
    expect(acceptor.acceptedRuns).toBe(1);
    const final = await rig.ended(run.id);
    expect(final).toMatchObject({ state: 'completed', owner: rig.cluster.self, observability: { node: 'test-node' } });
    // It ran in its remote_cwd, taken inside this worker's workspace root.
    const started = (await rig.events(run.session_id, run.id)).find((e) => e.kind === 'run_started')!;
    expect(started.payload.cwd).toBe(join(realpathSync(rig.config.workspaceRoot), 'repo'));
    await waitFor(() => acceptor.acceptedRuns === 0, 'the worker to stop counting the run', 5_000);
    expect((await rig.engine.metrics()).find((m) => m.id === WORKER_LANE)).toMatchObject({ completed: 1 });
  });

  it('refuses what it cannot take, saying why, and leaves the run unowned', async () => {
    const acceptor = await worker({ providers: ['codex'] });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const local = await rig.submit(session.id, 'a local run');
    expect(await refusal(acceptor.accept(local.id))).toMatchObject({ kind: 'not_found' });

    const unserved = await handedRun('hello');
    expect(await refusal(acceptor.accept(unserved.id))).toMatchObject({ kind: 'connection_failed', details: { reason: 'remote_capability_mismatch', missing: ['claude'] } });

    rig.config.worker!.providers = null;
    const outside = await handedRun('hello', { remote_cwd: '../..' });
    expect(await refusal(acceptor.accept(outside.id))).toMatchObject({ kind: 'config_invalid', details: { reason: 'remote_backend_start_failed', field: 'driver_opts.remote_cwd' } });

    const taken = await handedRun('hello');
    await rig.store.runs.update(taken.id, { owner: 'other-worker' });
    expect(await refusal(acceptor.accept(taken.id))).toMatchObject({ kind: 'conflict' });

    for (const run of [unserved, outside]) expect((await rig.store.runs.get(run.id))!.owner).toBeNull();
    expect(acceptor.acceptedRuns).toBe(0);
  });

  it('gives the run back (no owner) when its lane refuses it', async () => {
    const acceptor = await worker({ lanes: [{ id: WORKER_LANE, priority: 0, maxConcurrency: 1, maxPending: 1 }] });
    await rig.engine.pause(WORKER_LANE);
    const first = await handedRun('hello');
    const second = await handedRun('hello');
    await acceptor.accept(first.id);
    expect(await refusal(acceptor.accept(second.id))).toMatchObject({ kind: 'connection_failed', details: { reason: 'remote_connect_failed' } });
    expect((await rig.store.runs.get(second.id))!.owner).toBeNull();
    expect(acceptor.acceptedRuns).toBe(1);
  });

  it("serves a control 'start' request on a worker", async () => {
    const acceptor = await worker();
    const control = new ControlRouter({ ...rig, controlTimeoutMs: 1_000, acceptRemoteRun: (runId) => acceptor.accept(runId) });
    const run = await handedRun('hello [fixture:c1-hello]');
    expect(await control.handle({ kind: 'start', runId: run.id })).toEqual({ ok: true, value: { node: 'test-node' } });
    expect((await rig.ended(run.id)).state).toBe('completed');
  });
});
