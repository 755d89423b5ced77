/**
 * RunExecutor.execute called directly, as its lane command would be, for runs admitted while their
 * lane is paused (so only this call executes them): the CLI's events recorded in order, the
 * conversation remembered on the session, the command's outcome, and the ways a run ends before or
 * while its CLI runs.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AsmError } from '../../src/errors/kinds.js';
import { LaneError, type CommandContext } from '../../src/lanes/index.js';
import type { RunRecord } from '../../src/store/types.js';
import { holdingOwnership, isTerminalEvent, makeRig, type Rig } from './rig.js';

let rig: Rig;
afterEach(() => rig?.close());

/** A run of a new session, admitted while its lane is paused. */
async function parkedRun(prompt: string, env: Record<string, string> = {}): Promise<RunRecord> {
  rig = await makeRig({ env });
  const session = await rig.session();
  await rig.engine.pause(session.queue);
  return rig.submit(session.id, prompt);
}

function contextFor(run: RunRecord, controller = new AbortController()): CommandContext {
  return { id: run.id, lane: run.queue, type: 'run.execute', attempt: 1, retriesLeft: 0, signal: controller.signal };
}

const kindsOf = async (run: RunRecord) => (await rig.events(run.session_id, run.id)).map((e) => e.kind);

describe('RunExecutor.execute', () => {
  it('runs the CLI to the end, records its events in order, and keeps the conversation on the session', async () => {
    const run = await parkedRun('Say hello, then run: echo hello-from-shell [fixture:c1-hello]');
    expect(await rig.executor.execute(run.id, contextFor(run))).toEqual({ run_id: run.id, state: 'completed' });
    expect(await kindsOf(run)).toEqual(['run_queued', 'run_started', 'assistant_message', 'tool_use', 'tool_result', 'assistant_message', 'cost_update', 'result']);
    const final = (await rig.store.runs.get(run.id))!;
    expect(final).toMatchObject({ state: 'completed', owner: rig.cluster.self });
    expect(final.started_at).not.toBeNull();
    expect(final.result!.provider_session_id).toMatch(/^[0-9a-f-]{36}$/);
    expect((await rig.store.sessions.get(run.session_id))!.provider_session_id).toBe(final.result!.provider_session_id);
    expect(rig.active.size).toBe(0);

    // Its command coming back (a redelivered lane job) never starts it again.
    expect(await rig.executor.execute(run.id, contextFor(run))).toEqual({ run_id: run.id, state: 'completed' });
    expect((await kindsOf(run)).filter((k) => k === 'run_started')).toHaveLength(1);
  });

  it('answers its command from the record its end wrote: no read of the run after its terminal event', async () => {
    const run = await parkedRun('hello [fixture:c1-hello]');
    let ended = false;
    rig.recorder.onRunEnded(() => (ended = true));
    let readsAfterEnd = 0;
    const get = rig.store.runs.get.bind(rig.store.runs);
    rig.store.runs.get = (id) => {
      if (ended && id === run.id) readsAfterEnd++;
      return get(id);
    };
    expect(await rig.executor.execute(run.id, contextFor(run))).toEqual({ run_id: run.id, state: 'completed' });
    expect(ended).toBe(true);
    expect(readsAfterEnd).toBe(0);
  });

  it('fails its command when the run failed, so the lane counts it and dead-letters it', async () => {
    const run = await parkedRun('anything [fixture:dies-mid-run]');
    await expect(rig.executor.execute(run.id, contextFor(run))).rejects.toThrow(/^transport_error: /);
    expect((await rig.store.runs.get(run.id))!.state).toBe('failed');
    expect((await rig.events(run.session_id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
  });

  it('ends a run whose start threw where no step expected it, instead of leaving it queued with no command', async () => {
    const run = await parkedRun('hello [fixture:c1-hello]');
    // Any unexpected throw of a start: here a session of a provider this process does not have.
    await rig.store.sessions.update(run.session_id, { provider: 'retired-provider' });
    await expect(rig.executor.execute(run.id, { ...contextFor(run), retriesLeft: 2 })).rejects.toThrow();
    const ended = (await rig.store.runs.get(run.id))!;
    expect(ended).toMatchObject({ state: 'failed', result: { error: { kind: expect.any(String) } } });
    expect((await rig.events(run.session_id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
    expect(rig.written()).toEqual([]);
  });

  it('ends a run interrupted while it had no owner (the flag) without starting its CLI', async () => {
    const run = await parkedRun('hello [fixture:c1-hello]');
    await rig.store.runs.update(run.id, { interrupt_requested: true });
    expect(await rig.executor.execute(run.id, contextFor(run))).toEqual({ run_id: run.id, state: 'interrupted' });
    expect(await kindsOf(run)).toEqual(['run_queued', 'error']);
    expect(rig.written()).toEqual([]);
  });

  it('ends a run whose command was aborted before it started: user_cancelled, or timeout for a lane timeout', async () => {
    const cancelled = await parkedRun('hello [fixture:c1-hello]');
    const controller = new AbortController();
    controller.abort(new LaneError('cancelled', 'cancelled'));
    await rig.executor.execute(cancelled.id, contextFor(cancelled, controller));
    expect((await rig.store.runs.get(cancelled.id))!.result!.error!.kind).toBe('user_cancelled');

    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const timedOut = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    const lapsed = new AbortController();
    lapsed.abort(new LaneError('timeout', 'lane timeout'));
    await rig.executor.execute(timedOut.id, contextFor(timedOut, lapsed));
    expect((await rig.store.runs.get(timedOut.id))!).toMatchObject({ state: 'failed', result: { error: { kind: 'timeout' } } });
    expect(rig.written()).toEqual([]);
  });

  it('stops the CLI when its lane times the command out mid-run: the run ends with timeout', async () => {
    const run = await parkedRun('hang [fixture:never-prints]');
    const controller = new AbortController();
    const outcome = rig.executor.execute(run.id, contextFor(run, controller));
    await rig.event(run.session_id, (e) => e.run_id === run.id && e.kind === 'run_started');
    controller.abort(new LaneError('timeout', 'lane timeout'));
    await expect(outcome).rejects.toThrow(/^timeout: /);
    expect(await kindsOf(run)).toEqual(['run_queued', 'run_started', 'error']);
    expect(rig.active.size).toBe(0);
  });

  it('never starts a queued run again that this process took and no longer holds: the store lost what followed (its start, its end), so it ends with node_lost', async () => {
    const run = await parkedRun('hello [fixture:c1-hello]');
    // As Redis comes back from a crash that lost its last second of writes: the owner write is there, the rest is not.
    await rig.store.runs.update(run.id, { owner: rig.cluster.self });
    expect(await rig.executor.execute(run.id, contextFor(run))).toEqual({ run_id: run.id, state: 'failed' });
    expect((await rig.store.runs.get(run.id))!.result!.error).toMatchObject({ kind: 'node_lost', details: { cause: 'store_lost_writes' } });
    expect(await kindsOf(run)).toEqual(['run_queued', 'error']);
    expect(rig.written()).toEqual([]);
  });

  it('gives up a run whose claim landed while its answer was lost, for its lane to retry; the retry starts it', async () => {
    const run = await parkedRun('hello [fixture:c1-hello]');
    const claimLocal = rig.store.runs.claimLocal.bind(rig.store.runs);
    // The claim lands and its answer is lost with the connection.
    rig.store.runs.claimLocal = async (id, owner) => {
      await claimLocal(id, owner);
      throw new AsmError('not_ready', 'the connection to the store was lost', { retryable: true });
    };
    await expect(rig.executor.execute(run.id, { ...contextFor(run), retriesLeft: 2 })).rejects.toMatchObject({ kind: 'not_ready', retryable: true });
    expect(await rig.store.runs.get(run.id)).toMatchObject({ state: 'queued', owner: null });
    rig.store.runs.claimLocal = claimLocal;
    expect(await rig.executor.execute(run.id, { ...contextFor(run), attempt: 2, retriesLeft: 1 })).toEqual({ run_id: run.id, state: 'completed' });
    expect((await kindsOf(run)).filter((k) => k === 'run_started')).toHaveLength(1);
  });

  it('has a second attempt of its command, while the first still takes the run here, wait for the run to end: its CLI starts once', async () => {
    const held = holdingOwnership();
    rig = await makeRig({ wrapStore: held.wrap });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const run = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    const first = rig.executor.execute(run.id, contextFor(run));
    await held.reached;
    const second = rig.executor.execute(run.id, { ...contextFor(run), attempt: 2 });
    held.release();
    expect(await Promise.all([first, second])).toEqual([
      { run_id: run.id, state: 'completed' },
      { run_id: run.id, state: 'completed' },
    ]);
    expect((await kindsOf(run)).filter((k) => k === 'run_started')).toHaveLength(1);
    expect(rig.executor.executing.size).toBe(0);
  });

  it('takes the run in the read that starts it, with no write of its owner before the CLI starts; once admitted where a run may wait for memory', async () => {
    for (const [env, beforeStart] of [
      [{}, ['claimLocal']],
      [{ ASM_MAX_AGENT_MEMORY_MB: '100000' }, ['get', 'update owner']],
    ] as const) {
      const run = await parkedRun('hello [fixture:c1-hello]', env);
      const calls: string[] = [];
      const { runs } = rig.store;
      const [get, update, claimLocal] = [runs.get.bind(runs), runs.update.bind(runs), runs.claimLocal.bind(runs)];
      runs.get = (id) => (calls.push('get'), get(id));
      runs.update = (id, patch) => (calls.push(`update ${Object.keys(patch).join(' ')}`), update(id, patch));
      runs.claimLocal = (id, owner) => (calls.push('claimLocal'), claimLocal(id, owner));
      expect(await rig.executor.execute(run.id, contextFor(run))).toEqual({ run_id: run.id, state: 'completed' });
      // run_started turns the record to running: what came before it is what the start cost.
      expect(calls.slice(0, calls.findIndex((call) => call.startsWith('update state')))).toEqual(beforeStart);
      expect((await get(run.id))!.owner).toBe('test-instance');
      await rig.close();
    }
  });

  it('leaves a run whose start threw for its lane to retry queued and owned by no process, so that any process may take it', async () => {
    const run = await parkedRun('hello [fixture:c1-hello]');
    const set = rig.active.set.bind(rig.active);
    // A throw no step expected, after the run was taken (runHere): a retryable one.
    rig.active.set = () => {
      throw new AsmError('not_ready', 'the start broke', { retryable: true });
    };
    await expect(rig.executor.execute(run.id, { ...contextFor(run), retriesLeft: 2 })).rejects.toMatchObject({ kind: 'not_ready', retryable: true });
    expect(await rig.store.runs.get(run.id)).toMatchObject({ state: 'queued', owner: null });
    rig.active.set = set;
    expect(await rig.executor.execute(run.id, { ...contextFor(run), attempt: 2, retriesLeft: 1 })).toEqual({ run_id: run.id, state: 'completed' });
  });

  it('ends with node_lost a running run whose command came back after its owner died', async () => {
    const run = await parkedRun('hello [fixture:c1-hello]');
    await rig.store.runs.update(run.id, { state: 'running', owner: 'dead-instance' });
    expect(await rig.executor.execute(run.id, contextFor(run))).toEqual({ run_id: run.id, state: 'failed' });
    expect((await rig.store.runs.get(run.id))!.result!.error).toMatchObject({ kind: 'node_lost', details: { node: 'dead-instance' } });
    expect(rig.written()).toEqual([]);
  });
});
