/**
 * Sweeper, called directly (no timer): approvals past their deadline are denied with reason
 * "timeout" (the backend keeps no approval timer, so only the sweep expires them), in batches, and
 * in distributed mode the runs of instances that stopped heartbeating end with node_lost.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Cluster } from '../../src/nodes/cluster.js';
import { RedisCluster } from '../../src/nodes/redis.js';
import type { EventPayload } from '../../src/schemas/events.js';
import type { Sweeper } from '../../src/sessions/sweeps.js';
import { waitFor } from '../helpers/wait.js';
import { createMemoryStore } from '../../src/store/memory.js';
import { holdingOwnership, isTerminalEvent, makeRig, REPORT, withOutage, type Rig } from './rig.js';

let rig: Rig;
const connections: Redis[] = [];
afterEach(async () => {
  await rig?.close();
  for (const connection of connections.splice(0)) connection.disconnect();
});

function sweeperOf(rig: Rig): Sweeper {
  return rig.sweeper;
}

/** Commands each lane has completed so far. */
async function completedByLane(rig: Rig): Promise<Record<string, number>> {
  return Object.fromEntries((await rig.engine.metrics()).map((m) => [m.id, m.completed]));
}

function redisCluster(self: string): Cluster {
  const [redis, subscriber] = [new Redis(inject('asmTestRedisUrl')), new Redis(inject('asmTestRedisUrl'))];
  connections.push(redis, subscriber);
  return new RedisCluster({ self, redis, subscriber, prefix: `t-${randomUUID().slice(0, 8)}`, report: REPORT, heartbeatMs: 200, ttlMs: 5_000, lockLeaseMs: 5_000, lockWaitMs: 5_000 });
}

/** A run whose CLI started and hangs, and whose record then lost the write that took it (Redis came back without it). */
async function startedRunWithLostOwner(rig: Rig): Promise<{ sessionId: string; runId: string }> {
  const session = await rig.session();
  const run = await rig.submit(session.id, 'hang after starting [fixture:never-prints]');
  await rig.event(session.id, (e) => e.run_id === run.id && e.kind === 'run_started');
  await rig.recorder.serialize(run.id, async () => undefined);
  await rig.store.runs.update(run.id, { owner: null });
  return { sessionId: session.id, runId: run.id };
}

/** The run ended once, by this process, as a run whose writes the store lost; the executor let it go. */
async function expectEndedAsLostWrites(rig: Rig, sessionId: string, runId: string): Promise<void> {
  const ended = await rig.ended(runId, 5_000);
  expect(ended.result).toMatchObject({ status: 'failed', error: { kind: 'node_lost', details: { cause: 'store_lost_writes' } } });
  await waitFor(() => !rig.active.has(runId), 'the executor to let the run go (its CLI stopped)', 10_000);
  expect((await rig.events(sessionId, runId)).filter(isTerminalEvent)).toHaveLength(1);
}

describe('Sweeper', () => {
  it('denies an approval past its deadline with reason timeout, and the CLI hears the denial', async () => {
    rig = await makeRig();
    const sweeper = sweeperOf(rig);
    const session = await rig.session({ approval_timeout_ms: 1_000 });
    const run = await rig.submit(session.id, 'Say hello, then create a file [fixture:c2-deny]');
    const requested = await rig.event(session.id, (e) => e.run_id === run.id && e.kind === 'approval_requested');
    const approvalId = (requested.payload as EventPayload<'approval_requested'>).approval_id;

    await sweeper.sweep();
    expect(await rig.store.approvals.get(approvalId)).toMatchObject({ state: 'pending' });

    await waitFor(async () => (await rig.store.approvals.listExpired(Date.now(), 10)).length, 'the deadline to pass', 5_000);
    const before = await completedByLane(rig);
    await sweeper.sweep();
    expect(await rig.store.approvals.get(approvalId)).toMatchObject({ state: 'resolved', decision: 'deny', reason: 'timeout' });
    // The denial is a decision on the control lane; with no node lost, the system lane stays quiet.
    const after = await completedByLane(rig);
    expect(after.control - before.control).toBe(1);
    expect(after.system - before.system).toBe(0);
    expect((await rig.ended(run.id)).state).toBe('completed');
    const resolved = (await rig.events(session.id, run.id)).filter((e) => e.kind === 'approval_resolved');
    expect(resolved.map((e) => e.payload)).toEqual([{ approval_id: approvalId, decision: 'deny', reason: 'timeout' }]);
    expect(rig.written().find((line) => line.type === 'control_response').response.response.behavior).toBe('deny');
  });

  it('expires at most 100 approvals per sweep, earliest deadline first; the next sweep takes the rest', async () => {
    rig = await makeRig();
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const run = await rig.submit(session.id, 'anything');
    const past = Date.now() - 60_000;
    for (let i = 0; i < 101; i++) {
      const payload = { approval_id: `appr_${i}`, subject: 'Bash', details: { tool_input: null }, expires_at: new Date(past + i).toISOString() };
      await rig.approvals.record(run, payload);
    }
    const sweeper = sweeperOf(rig);
    await sweeper.sweep();
    expect((await rig.store.approvals.listPending({ runId: run.id })).map((a) => a.id)).toEqual(['appr_100']);
    await sweeper.sweep();
    expect(await rig.store.approvals.listPending({ runId: run.id })).toEqual([]);
    expect(await rig.store.approvals.get('appr_100')).toMatchObject({ decision: 'deny', reason: 'timeout' });
  });

  it('in distributed mode ends runs of a lost instance with node_lost, and leaves the others alone', async () => {
    rig = await makeRig({ cluster: redisCluster('sweeping-instance') });
    const session = await rig.session({ max_concurrent_runs: 3 });
    await rig.engine.pause(session.queue);
    const [orphan, mine, unowned] = [await rig.submit(session.id, 'a'), await rig.submit(session.id, 'b'), await rig.submit(session.id, 'c')];
    await rig.store.runs.update(orphan.id, { owner: 'lost-instance' });
    await rig.store.runs.update(mine.id, { owner: rig.cluster.self });

    const before = await completedByLane(rig);
    await sweeperOf(rig).sweep();
    expect((await rig.store.runs.get(orphan.id))!.result).toMatchObject({ status: 'failed', error: { kind: 'node_lost', details: { node: 'lost-instance' } } });
    // Node maintenance: one command on the system lane.
    expect((await completedByLane(rig)).system - before.system).toBe(1);
    expect((await rig.store.runs.get(mine.id))!.state).toBe('queued');
    expect((await rig.store.runs.get(unowned.id))!.state).toBe('queued');
  });

  it('once the store is back from an outage, ends the runs it says this process took that it does not hold, queued or running', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    rig = await makeRig({ wrapStore: () => outage.store });
    const session = await rig.session({ max_concurrent_runs: 3 });
    await rig.engine.pause(session.queue);
    const [takenQueued, takenRunning, unowned] = [await rig.submit(session.id, 'a'), await rig.submit(session.id, 'b'), await rig.submit(session.id, 'c')];
    // Its owner write landed and what followed did not (a queued run), or its end was lost (a running one).
    await rig.store.runs.update(takenQueued.id, { owner: rig.cluster.self });
    await rig.store.runs.update(takenRunning.id, { owner: rig.cluster.self, state: 'running' });

    outage.failNext(1);
    await sweeperOf(rig).sweep();
    expect(outage.failedCalls()).toBe(1);
    for (const run of [takenQueued, takenRunning]) expect((await rig.store.runs.get(run.id))!.state).not.toBe('failed');
    await sweeperOf(rig).sweep();
    for (const run of [takenQueued, takenRunning]) {
      expect((await rig.store.runs.get(run.id))!.result).toMatchObject({ status: 'failed', error: { kind: 'node_lost', details: { cause: 'store_lost_writes' } } });
      expect((await rig.events(session.id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
    }
    expect((await rig.store.runs.get(unowned.id))!.state).toBe('queued');
  });

  it('once the store is back from an outage, leaves to its lane command a run that command has taken here and not started yet: it starts and ends once', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    rig = await makeRig({ wrapStore: () => outage.store });
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const run = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    // Its claim has landed and its answer has not come back to the executor yet.
    const claimLocal = rig.store.runs.claimLocal.bind(rig.store.runs);
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    let claimed!: () => void;
    const claimLanded = new Promise<void>((resolve) => (claimed = resolve));
    rig.store.runs.claimLocal = async (id, owner) => {
      const read = await claimLocal(id, owner);
      claimed();
      await answered;
      return read;
    };
    const outcome = rig.executor.execute(run.id, { id: run.id, lane: run.queue, type: 'run.execute', attempt: 1, retriesLeft: 0, signal: new AbortController().signal });
    await claimLanded;
    expect(await rig.store.runs.get(run.id)).toMatchObject({ state: 'queued', owner: rig.cluster.self });
    expect(rig.active.has(run.id)).toBe(false);

    outage.failNext(1);
    await sweeperOf(rig).sweep();
    await sweeperOf(rig).sweep();
    expect(outage.failedCalls()).toBe(1);
    expect((await rig.store.runs.get(run.id))!.state).toBe('queued');
    answer();
    expect(await outcome).toEqual({ run_id: run.id, state: 'completed' });
    expect((await rig.events(session.id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
  });

  it('once the store is back from an outage, ends a run it stops here because its record lost the write that took it', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    rig = await makeRig({ wrapStore: () => outage.store });
    // Redis came back without the owner write while the run's later writes, retried through the outage, landed.
    const { sessionId, runId } = await startedRunWithLostOwner(rig);

    outage.failNext(1);
    await sweeperOf(rig).sweep();
    await sweeperOf(rig).sweep();
    // Its CLI is stopped, and the executor lets go of it without writing a second end.
    await expectEndedAsLostWrites(rig, sessionId, runId);
  });

  it('ends a run fenced after the reconcile because its record lost the write that took it: nobody else would', async () => {
    rig = await makeRig();
    // Redis came back without the owner write; the reconcile is past, and the run is next checked
    // after a heartbeat lapse (its next write, or the sweep's fence), as redis-aof-restart.test.ts found.
    const { sessionId, runId } = await startedRunWithLostOwner(rig);
    rig.active.get(runId)!.checkedLapses = -1;
    await rig.recorder.fenceLostRuns();
    await expectEndedAsLostWrites(rig, sessionId, runId);
  });

  it('ends a run whose own end finds that its record lost the write that took it', async () => {
    rig = await makeRig();
    // As above, but the CLI ends before anything checks the run: the fence is its end's own write.
    const { sessionId, runId } = await startedRunWithLostOwner(rig);
    rig.active.get(runId)!.checkedLapses = -1;
    await rig.active.get(runId)!.backend!.interrupt('user');
    await expectEndedAsLostWrites(rig, sessionId, runId);
  });

  it("does not fence a run still starting (no owner written yet) after a heartbeat lapse: it starts and completes", async () => {
    const held = holdingOwnership();
    // Where a run may wait for memory, its owner is written once it is admitted, after it became active here (execution.ts).
    rig = await makeRig({ wrapStore: held.wrap, env: { ASM_MAX_AGENT_MEMORY_MB: '100000' } });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    // Active here, its owner write still on its way (as while it waits at the memory gate), when a lapse is noticed.
    await held.reached;
    const active = rig.active.get(run.id)!;
    expect(active.backend).toBeUndefined();
    active.checkedLapses = -1;
    await rig.recorder.fenceLostRuns();
    expect(active.ended).toBe(false);
    held.release();
    expect((await rig.ended(run.id)).state).toBe('completed');
  });

  it('in embedded mode never ends runs for a lost owner (there is no other instance)', async () => {
    rig = await makeRig();
    const session = await rig.session();
    await rig.engine.pause(session.queue);
    const run = await rig.submit(session.id, 'a');
    await rig.store.runs.update(run.id, { owner: 'lost-instance' });
    await sweeperOf(rig).sweep();
    expect((await rig.store.runs.get(run.id))!.state).toBe('queued');
  });
});
