/**
 * ControlRouter: interrupts of runs wherever they are (the session's FIFO, a lane's queue, a CLI of
 * this process, a CLI of another process), the control requests it serves, and approval decisions
 * routed to the process that owns the run. Other processes are real: a second rig sharing the store,
 * with RedisClusters on the test redis-server carrying the requests between them.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { AsmError } from '../../src/errors/kinds.js';
import { RedisCluster } from '../../src/nodes/redis.js';
import type { EventPayload } from '../../src/schemas/events.js';
import type { RunRecord, Store } from '../../src/store/types.js';
import { waitFor } from '../helpers/wait.js';
import { holdingOwnership, holdingRunCall, isTerminalEvent, makeRig, refusal, REPORT, type Rig } from './rig.js';

const rigs: Rig[] = [];
const connections: Redis[] = [];
afterEach(async () => {
  for (const rig of rigs.splice(0)) await rig.close();
  for (const connection of connections.splice(0)) connection.disconnect();
});

async function newRig(options: Parameters<typeof makeRig>[0] = {}): Promise<Rig> {
  const rig = await makeRig(options);
  rigs.push(rig);
  return rig;
}

/** Two runs of one session (max_concurrent_runs 1) while its lane is paused: the first in the lane's queue, the second in the session's FIFO. */
async function parkedPair(rig: Rig): Promise<{ inLane: RunRecord; inFifo: RunRecord }> {
  const session = await rig.session({ max_concurrent_runs: 1 });
  await rig.engine.pause(session.queue);
  const inLane = await rig.submit(session.id, 'first');
  const inFifo = await rig.submit(session.id, 'second');
  expect([inLane.dispatched, inFifo.dispatched]).toEqual([true, false]);
  return { inLane, inFifo };
}

describe('ControlRouter.interrupt', () => {
  it('ends a run still in its session FIFO at once, user_cancelled, and leaves the other run alone', async () => {
    const rig = await newRig();
    const { inLane, inFifo } = await parkedPair(rig);
    const interrupted = await rig.control.interrupt(inFifo.id);
    expect(interrupted).toMatchObject({ id: inFifo.id, state: 'interrupted', result: { status: 'interrupted', error: { kind: 'user_cancelled' } } });
    expect((await rig.events(inFifo.session_id, inFifo.id)).map((e) => [e.kind, e.payload.kind])).toEqual([
      ['run_queued', undefined],
      ['error', 'user_cancelled'],
    ]);
    expect((await rig.store.runs.get(inLane.id))!.state).toBe('queued');
  });

  it("ends a run waiting in its lane's queue and takes it off the lane", async () => {
    const rig = await newRig();
    const { inLane, inFifo } = await parkedPair(rig);
    expect((await rig.control.interrupt(inLane.id)).state).toBe('interrupted');
    expect(await rig.engine.cancel(inLane.id)).toBe('unknown');
    // The session's next run takes the freed slot: the lane holds it, and only it.
    await waitFor(async () => (await rig.store.runs.get(inFifo.id))!.dispatched, 'the next run to be dispatched', 5_000);
    expect((await rig.engine.metrics()).find((m) => m.id === inLane.queue)).toMatchObject({ pending: 1, cancelled: 1 });
  });

  it('stops a running CLI: one terminal event, user_cancelled, after the CLI got its interrupt request', async () => {
    const rig = await newRig();
    const session = await rig.session();
    const run = await rig.submit(session.id, 'Run the slow job [fixture:c3-interrupt]');
    await rig.event(session.id, (e) => e.run_id === run.id && e.kind === 'tool_use');
    await rig.control.interrupt(run.id);
    const final = await rig.ended(run.id);
    expect(final).toMatchObject({ state: 'interrupted', result: { error: { kind: 'user_cancelled' } } });
    expect((await rig.events(session.id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
    expect(rig.written().some((line) => line.type === 'control_request' && line.request.subtype === 'interrupt')).toBe(true);
  });

  it('answers the interrupt of a CLI of this process with the run as this process wrote it, reading nothing', async () => {
    let reads = 0;
    // Holds no call: only counts the run reads.
    const counted = holdingRunCall((call) => (call.method === 'get' && reads++, false));
    const rig = await newRig({ wrapStore: counted.wrap });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'Run the slow job [fixture:c3-interrupt]');
    await rig.event(session.id, (e) => e.run_id === run.id && e.kind === 'tool_use');
    const stored = (await rig.store.runs.get(run.id))!;
    reads = 0;
    const answered = await rig.control.interrupt(run.id);
    expect(reads).toBe(0);
    expect(answered).toEqual(stored);
    expect(answered).toMatchObject({ id: run.id, state: 'running', owner: 'test-instance' });
    expect((await rig.ended(run.id)).state).toBe('interrupted');
  });

  // The run is active here but has no CLI yet: the interrupt aborts its lane command, which the executor reads before starting the CLI.
  it('stops a run interrupted while its executor takes ownership', async () => {
    const held = holdingOwnership();
    const rig = await newRig({ wrapStore: held.wrap });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    await held.reached;
    await rig.control.interrupt(run.id);
    held.release();
    expect((await rig.ended(run.id)).state).toBe('interrupted');
  });

  it('refuses an ended run with 409 conflict and an unknown one with 404', async () => {
    const rig = await newRig();
    const { inFifo } = await parkedPair(rig);
    await rig.control.interrupt(inFifo.id);
    const again = await refusal(rig.control.interrupt(inFifo.id));
    expect(again.kind).toBe('conflict');
    expect(again.httpStatus).toBe(409);
    expect((await rig.events(inFifo.session_id, inFifo.id)).filter(isTerminalEvent)).toHaveLength(1);
    expect((await refusal(rig.control.interrupt('run_nope'))).httpStatus).toBe(404);
  });

  it('flags a run whose lane job is elsewhere; an owner that is gone is no error (the orphan sweep ends it)', async () => {
    const rig = await newRig();
    const { inLane } = await parkedPair(rig);
    // Its lane job is no longer on this engine, and the instance holding the run is gone.
    await rig.engine.cancel(inLane.id);
    await rig.store.runs.update(inLane.id, { owner: 'gone-instance' });
    const run = await rig.control.interrupt(inLane.id);
    expect(run).toMatchObject({ state: 'queued', interrupt_requested: true });
  });
});

describe('ControlRouter.handle (requests addressed to this process)', () => {
  it('answers refusals as error bodies, never throws', async () => {
    const rig = await newRig();
    expect(await rig.control.handle({ kind: 'decide', approvalId: 'appr_nope', decision: 'allow', reason: null })).toEqual({
      ok: false,
      error: expect.objectContaining({ kind: 'not_found', domain: 'approval' }),
    });
    const start = await rig.control.handle({ kind: 'start', runId: 'run_any' });
    expect(start).toMatchObject({ ok: false, error: { kind: 'conflict' } });
    expect(start.ok ? '' : start.error.message).toMatch(/API process/);
  });

  it('interrupts a run queued on this process', async () => {
    const rig = await newRig();
    const { inLane } = await parkedPair(rig);
    expect(await rig.control.handle({ kind: 'interrupt', runId: inLane.id })).toEqual({ ok: true, value: null });
    expect((await rig.store.runs.get(inLane.id))!.state).toBe('interrupted');
  });

  it('decides an approval of a run of this process and answers the record', async () => {
    const rig = await newRig();
    const session = await rig.session();
    const run = await rig.submit(session.id, 'create a file [fixture:c2-approve]');
    const requested = await rig.event(session.id, (e) => e.run_id === run.id && e.kind === 'approval_requested');
    const approvalId = (requested.payload as EventPayload<'approval_requested'>).approval_id;
    const reply = await rig.control.handle({ kind: 'decide', approvalId, decision: 'allow', reason: null });
    expect(reply).toMatchObject({ ok: true, value: { id: approvalId, state: 'resolved', decision: 'allow' } });
    expect((await rig.ended(run.id)).state).toBe('completed');
  });
});

describe('ControlRouter across processes', () => {
  /** Two processes of one deployment: `api` and `owner` share the store; their clusters meet in Redis. */
  async function twoProcesses(apiStore?: (store: Store) => Store): Promise<{ api: Rig; owner: Rig }> {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const cluster = (self: string) => {
      const [redis, subscriber] = [new Redis(inject('asmTestRedisUrl')), new Redis(inject('asmTestRedisUrl'))];
      connections.push(redis, subscriber);
      return new RedisCluster({ self, redis, subscriber, prefix, report: REPORT, heartbeatMs: 200, ttlMs: 5_000, lockLeaseMs: 5_000, lockWaitMs: 5_000 });
    };
    const api = await newRig({ cluster: cluster('api-instance'), wrapStore: apiStore });
    // Made last, so the fake claude's stdin log (FAKE_CLAUDE_LOG) is the owner's.
    const owner = await newRig({ cluster: cluster('owner-instance'), wrapStore: () => api.store });
    return { api, owner };
  }

  it('routes an approval decision to the process running the CLI, and relays its refusal', async () => {
    const { api, owner } = await twoProcesses();
    const session = await owner.session();
    const run = await owner.submit(session.id, 'create a file [fixture:c2-approve]');
    const requested = await owner.event(session.id, (e) => e.run_id === run.id && e.kind === 'approval_requested');
    const approvalId = (requested.payload as EventPayload<'approval_requested'>).approval_id;

    // Only the owner holds the CLI: had the api process decided alone, the CLI would never hear it.
    const [first, second] = await Promise.allSettled([api.control.decide(approvalId, 'allow', null), api.control.decide(approvalId, 'allow', null)]);
    const outcomes = [first, second].map((o) => (o.status === 'fulfilled' ? o.value.decision : (o.reason as AsmError).kind)).sort();
    expect(outcomes).toEqual(['allow', 'conflict']);
    expect(api.active.size).toBe(0);
    expect((await owner.ended(run.id)).state).toBe('completed');
    expect(owner.written().find((line) => line.type === 'control_response').response.response.behavior).toBe('allow');
  });

  it("routes an interrupt to the process running the CLI when the lane job is not on this process's engine", async () => {
    const { api, owner } = await twoProcesses();
    const session = await owner.session();
    const run = await owner.submit(session.id, 'Run the slow job [fixture:c3-interrupt]');
    await owner.event(session.id, (e) => e.run_id === run.id && e.kind === 'tool_use');
    await api.control.interrupt(run.id);
    expect(await owner.ended(run.id)).toMatchObject({ state: 'interrupted', interrupt_requested: true, result: { error: { kind: 'user_cancelled' } } });
    expect(owner.written().some((line) => line.type === 'control_request' && line.request.subtype === 'interrupt')).toBe(true);
  });

  // An API process's lane command for a remote_node run goes on for a moment after its worker took
  // the run (it reads the run's end): an interrupt then found it 'active', aborted a signal nobody
  // read any more, and the run started on the worker all the same.
  it("routes an interrupt to the run's owner while this process's lane command for the run has not ended", async () => {
    // The API's command for the run is held at its first read of the run (its claim, which does not take a run another process owns).
    let armed: string | undefined;
    const held = holdingRunCall((call) => {
      if (call.method !== 'claimLocal' || call.id !== armed) return false;
      armed = undefined;
      return true;
    });
    const { api, owner } = await twoProcesses(held.wrap);
    const session = await owner.session();
    await owner.engine.pause(session.queue);
    const run = await owner.submit(session.id, 'hello [fixture:c1-hello]');
    await owner.store.runs.update(run.id, { owner: owner.cluster.self });
    armed = run.id;
    const command = api.commands.submitRun(session.queue, run);
    await held.reached;
    expect(await api.control.interrupt(run.id)).toMatchObject({ state: 'interrupted', started_at: null, result: { error: { kind: 'user_cancelled' } } });
    held.release();
    expect(await (await command).result).toEqual({ run_id: run.id, state: 'interrupted' });
    await owner.engine.resume(session.queue);
    expect((await owner.engine.metrics()).find((m) => m.id === session.queue)).toMatchObject({ pending: 0, cancelled: 1 });
    expect(owner.written()).toEqual([]);
  });
});
