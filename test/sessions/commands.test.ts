/**
 * CommandBus on the in-process lane engine: a user-facing command's answer or refusal crosses the
 * lane as a value (a refusal is an error body, turned back into the same AsmError), the lane's own
 * refusals become error kinds, and a run's execution fails its command (feeding the dead-letter queue).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AsmError } from '../../src/errors/kinds.js';
import { createInProcessEngine, DEFAULT_LANES, mergeLanes, type CommandContext, type LaneEngine, type LaneOverride } from '../../src/lanes/index.js';
import type { EventMetadata } from '../../src/schemas/events.js';
import { CommandBus, isUnstartedCommand, type CommandHandlers } from '../../src/sessions/commands.js';
import type { ApprovalRecord, RunRecord, SessionRecord } from '../../src/store/types.js';
import { refusal } from './rig.js';

let engine: LaneEngine;
afterEach(() => engine?.close());

/** Handlers that each call `behave` with their type, payload and context. */
function bus(behave: (type: string, payload: unknown, ctx: CommandContext) => Promise<unknown>, lanes: LaneOverride[] = [], startWithinMs = 30_000): CommandBus {
  engine = createInProcessEngine({ lanes: mergeLanes(DEFAULT_LANES, lanes), dlqSize: 10 });
  const commands = new CommandBus(engine, startWithinMs);
  const handlers: CommandHandlers = {
    'session.close': (p, ctx) => behave('session.close', p, ctx) as Promise<SessionRecord>,
    'run.interrupt': (p, ctx) => behave('run.interrupt', p, ctx) as Promise<RunRecord>,
    'approval.decide': (p, ctx) => behave('approval.decide', p, ctx) as Promise<ApprovalRecord>,
    'node.end_lost_runs': (p, ctx) => behave('node.end_lost_runs', p, ctx) as Promise<null>,
    'run.execute': (p, ctx) => behave('run.execute', p, ctx) as Promise<{ run_id: string; state: string }>,
  };
  commands.registerAll(handlers);
  return commands;
}

const metricsOf = async (lane: string) => (await engine.metrics()).find((m) => m.id === lane)!;

describe('CommandBus', () => {
  it("runs a command on the lane it names, by its type, and returns the handler's answer", async () => {
    const commands = bus(async (type, payload, ctx) => ({ type, payload, lane: ctx.lane }));
    await engine.start();
    const answer = await commands.call('control', 'run.interrupt', { id: 'run_1' });
    expect(answer).toEqual({ type: 'run.interrupt', payload: { id: 'run_1' }, lane: 'control' });
  });

  it('turns a refusal into an AsmError of the same kind, domain, message and details; the command itself succeeded', async () => {
    const commands = bus(async () => {
      throw new AsmError('conflict', 'approval appr_1 was already resolved (allow)', { domain: 'approval', details: { decision: 'allow' } });
    });
    await engine.start();
    const err = await refusal(commands.call('control', 'approval.decide', { id: 'appr_1', decision: 'deny', reason: null }));
    expect(err.toBody()).toEqual({ kind: 'conflict', domain: 'approval', message: 'approval appr_1 was already resolved (allow)', retryable: false, details: { decision: 'allow' } });
    expect(err.httpStatus).toBe(409);
    expect(await metricsOf('control')).toMatchObject({ completed: 1, failed: 0, deadLettered: 0 });
    expect(await engine.deadLetters()).toEqual([]);
  });

  it('withdraws a command its paused lane did not start in time: not_ready naming the lane, and it never runs', async () => {
    const ran: string[] = [];
    const commands = bus(async (type) => void ran.push(type), [], 200);
    await engine.start();
    await engine.pause('session');
    const startedAt = Date.now();
    const err = await refusal(commands.call('session', 'session.close', { id: 'ses_1' }));
    expect(err).toMatchObject({ kind: 'not_ready', retryable: true, details: { lane: 'session', waited_ms: 200 } });
    expect(err.httpStatus).toBe(503);
    // The sweep tells this refusal from the store's outage, which is not_ready too.
    expect(isUnstartedCommand(err)).toBe(true);
    expect(isUnstartedCommand(new AsmError('not_ready', 'Redis is unreachable'))).toBe(false);
    expect(Date.now() - startedAt).toBeLessThan(5_000); // 200 ms, and slack for a loaded machine
    await engine.resume('session');
    // The lane is free again, and what runs on it now is the next command only.
    await commands.call('session', 'session.close', { id: 'ses_2' });
    expect(ran).toEqual(['session.close']);
    expect(await metricsOf('session')).toMatchObject({ pending: 0, active: 0, completed: 1, cancelled: 1 });
  });

  it('awaits a command that started in time, however long it then takes', async () => {
    const commands = bus(async () => new Promise((resolve) => setTimeout(() => resolve('slow but started'), 600)), [], 100);
    await engine.start();
    expect(await commands.call('control', 'run.interrupt', { id: 'run_1' })).toBe('slow but started');
  });

  it('turns any other handler error into an AsmError of kind unknown', async () => {
    const commands = bus(async () => {
      throw new TypeError('boom');
    });
    await engine.start();
    expect(await refusal(commands.call('session', 'session.close', { id: 'ses_1' }))).toMatchObject({ kind: 'unknown', message: 'boom' });
  });

  it("turns a lane's queue_full into AsmError queue_full (429)", async () => {
    const commands = bus(async () => null, [{ id: 'session', maxPending: 1 }]);
    await engine.start();
    await engine.pause('session');
    const waiting = commands.call('session', 'session.close', { id: 'ses_1' });
    const err = await refusal(commands.call('session', 'session.close', { id: 'ses_2' }));
    expect(err.kind).toBe('queue_full');
    expect(err.httpStatus).toBe(429);
    await engine.resume('session');
    expect(await waiting).toBeNull();
  });

  it('refuses an unknown lane as a bad queue field, and a submit during shutdown as shutting_down', async () => {
    const commands = bus(async () => null);
    await engine.start();
    expect(await refusal(commands.call('no-such-lane', 'session.close', { id: 'ses_1' }))).toMatchObject({ kind: 'bad_request', details: { field: 'queue' } });
    await engine.shutdown();
    expect(await refusal(commands.call('session', 'session.close', { id: 'ses_1' }))).toMatchObject({ kind: 'shutting_down' });
  });

  it("submits a run's execution under the run id; its failure fails the command and dead-letters it", async () => {
    const commands = bus(async (_type, payload) => {
      throw new Error(`transport_error: run ${(payload as { run_id: string }).run_id} failed`);
    });
    const handle = await commands.submitRun('prompt', { id: 'run_42', session_id: 'ses_42', observability: {} as EventMetadata });
    expect(handle.id).toBe('run_42');
    // The same run submitted again joins the first submission rather than executing twice.
    expect((await commands.submitRun('prompt', { id: 'run_42', session_id: 'ses_42', observability: {} as EventMetadata })).id).toBe('run_42');
    await engine.start();
    await expect(handle.result).rejects.toThrow('transport_error: run run_42 failed');
    expect(await engine.deadLetters()).toEqual([expect.objectContaining({ commandId: 'run_42', commandType: 'run.execute', laneId: 'prompt', payload: { run_id: 'run_42', session_id: 'ses_42' } })]);
    expect(await metricsOf('prompt')).toMatchObject({ submitted: 1, failed: 1 });
  });
});
