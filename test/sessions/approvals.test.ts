/**
 * ApprovalBook with runs of the fake claude, which asks for a Bash approval in the c2-approve and
 * c2-deny transcripts and exits 3 (failing the run) when the answer it gets is not the one its
 * transcript expects: a completed run proves the decision reached the CLI.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventPayload } from '../../src/schemas/events.js';
import { makeRig, refusal, type Rig } from './rig.js';

let rig: Rig;
beforeEach(async () => {
  rig = await makeRig();
});
afterEach(() => rig.close());

/** A run of a new session (or of `sessionId`) and the approval its CLI asked for. */
async function runAskingApproval(fixture: 'c2-approve' | 'c2-deny', sessionId?: string) {
  const session = sessionId ?? (await rig.session()).id;
  const run = await rig.submit(session, `Say hello, then create a file [fixture:${fixture}]`);
  const requested = await rig.event(session, (e) => e.run_id === run.id && e.kind === 'approval_requested');
  return { sessionId: session, run, approvalId: (requested.payload as EventPayload<'approval_requested'>).approval_id };
}

describe('ApprovalBook', () => {
  it('allow: appends approval_resolved before the tool runs, and the decision reaches the CLI', async () => {
    const { sessionId, run, approvalId } = await runAskingApproval('c2-approve');
    expect(await rig.store.approvals.get(approvalId)).toMatchObject({ state: 'pending', run_id: run.id, subject: 'Bash' });

    const decided = await rig.approvals.decide(approvalId, 'allow', null);
    expect(decided).toMatchObject({ id: approvalId, state: 'resolved', decision: 'allow', reason: null });
    expect((await rig.ended(run.id)).state).toBe('completed');

    const kinds = (await rig.events(sessionId, run.id)).map((e) => e.kind);
    const resolvedAt = kinds.indexOf('approval_resolved');
    expect(resolvedAt).toBeGreaterThan(kinds.indexOf('approval_requested'));
    expect(kinds.indexOf('tool_result')).toBeGreaterThan(resolvedAt);
    expect(kinds.filter((k) => k === 'approval_resolved')).toHaveLength(1);
    expect(rig.written().find((line) => line.type === 'control_response').response.response.behavior).toBe('allow');
  });

  it('deny: the reason reaches the CLI', async () => {
    const { run, approvalId } = await runAskingApproval('c2-deny');
    await rig.approvals.decide(approvalId, 'deny', 'not in this repo');
    expect((await rig.ended(run.id)).state).toBe('completed');
    expect(rig.written().find((line) => line.type === 'control_response').response.response).toMatchObject({ behavior: 'deny', message: 'not in this repo' });
  });

  it('a second decision is a 409 conflict naming the first; nothing more is appended', async () => {
    const { sessionId, run, approvalId } = await runAskingApproval('c2-approve');
    await rig.approvals.decide(approvalId, 'allow', null);
    const err = await refusal(rig.approvals.decide(approvalId, 'deny', 'changed my mind'));
    expect(err).toMatchObject({ kind: 'conflict', domain: 'approval', details: { decision: 'allow', reason: null } });
    expect(err.httpStatus).toBe(409);
    await rig.ended(run.id);
    expect((await rig.events(sessionId, run.id)).filter((e) => e.kind === 'approval_resolved')).toHaveLength(1);
    expect(await rig.store.approvals.get(approvalId)).toMatchObject({ decision: 'allow' });
  });

  it('an approval whose run ended was denied with run_ended; deciding it then is a conflict', async () => {
    const { sessionId, run, approvalId } = await runAskingApproval('c2-approve');
    await rig.active.get(run.id)!.backend!.interrupt('user');
    await rig.ended(run.id);
    expect(await rig.store.approvals.get(approvalId)).toMatchObject({ state: 'resolved', decision: 'deny', reason: 'run_ended' });
    const err = await refusal(rig.approvals.decide(approvalId, 'allow', null));
    expect(err).toMatchObject({ kind: 'conflict', details: { decision: 'deny', reason: 'run_ended' } });
    const kinds = (await rig.events(sessionId, run.id)).map((e) => e.kind);
    expect(kinds.slice(-2)).toEqual(['approval_resolved', 'error']);
  });

  it('an unknown approval is a 404 not_found', async () => {
    const err = await refusal(rig.approvals.decide('appr_nope', 'allow', null));
    expect(err).toMatchObject({ kind: 'not_found', domain: 'approval' });
    expect(err.httpStatus).toBe(404);
  });

  it('allow_for_session adds the tool to the session, and a later request for it is allowed without asking', async () => {
    const first = await runAskingApproval('c2-approve');
    await rig.approvals.decide(first.approvalId, 'allow_for_session', null);
    expect((await rig.ended(first.run.id)).state).toBe('completed');
    expect((await rig.store.sessions.get(first.sessionId))!.granted_tools).toEqual(['Bash']);

    // Nobody decides this one: the session's allowance does, through the control lane as any decision.
    const controlDone = async () => (await rig.engine.metrics()).find((m) => m.id === 'control')!.completed;
    const before = await controlDone();
    const second = await rig.submit(first.sessionId, 'create it again [fixture:c2-approve]');
    expect((await rig.ended(second.id)).state).toBe('completed');
    expect((await controlDone()) - before).toBe(1);
    const events = await rig.events(first.sessionId, second.id);
    const requested = events.find((e) => e.kind === 'approval_requested')!;
    const resolved = events.find((e) => e.kind === 'approval_resolved')!;
    expect(resolved.seq).toBeGreaterThan(requested.seq);
    expect(resolved.payload).toEqual({ approval_id: requested.payload.approval_id, decision: 'allow', reason: 'allowed_for_session' });
    expect(await rig.store.approvals.get(requested.payload.approval_id as string)).toMatchObject({ state: 'resolved', decision: 'allow', reason: 'allowed_for_session' });
    expect((await rig.store.sessions.get(first.sessionId))!.granted_tools).toEqual(['Bash']);
  });
});
