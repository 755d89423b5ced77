import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GEMINI_MODEL, untilGone, useServiceRig } from './harness.js';
import { startedOf as started, twoWarmRuns } from './service-scenarios.js';
import { groupAlive } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A warm session with the real Gemini CLI (`gemini --acp`, core lane) against the loopback model
 * server: the second run is the next session/prompt on the same ACP session of the same process
 * (same pid, `warm: true`), the model sees the whole conversation, usage is per run, approvals are
 * asked on the kept process (headless gemini cannot ask), an interrupt is session/cancel and leaves
 * the process warm, and a conversation whose process idled out goes on cold (`--resume`).
 */

describe('gemini (real CLI), warm session', () => {
  const ctx = useServiceRig('gemini');
  const rig = ctx.rig;
  const session = { model: GEMINI_MODEL, lane: 'core', warm: true };

  it('runs the second prompt on the same process and ACP session: the conversation goes on, usage per run', async () => {
    const { first, second } = await twoWarmRuns(ctx, { model: GEMINI_MODEL });
    expect(started(first).args).toContain('--acp');
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
    expect(second.kinds).toEqual(['run_queued', 'run_started', 'user_message', 'assistant_delta', 'assistant_delta', 'result']);
    const history = JSON.stringify(ctx.model.requests[1].body.contents);
    expect(history).toContain('First question');
    expect(history).toContain('First answer.');
    expect(history).toContain('Second question');
  });

  it('asks for approval on the kept process (the default mode), and the tool runs there', async () => {
    ctx.model.script({ text: 'Hello.' }, { text: 'Creating it.', shell: 'touch warm-approved.txt' }, { text: 'Created it.' });
    const s = await rig.session(session);
    const first = await rig.run(s, 'Say hello');
    const second = await rig.run(s, 'Create warm-approved.txt', async (live) => {
      const requested = await live.event('approval_requested');
      expect(requested.payload).toMatchObject({ subject: 'run_shell_command', details: { tool_input: { title: 'touch warm-approved.txt', kind: 'execute' } } });
      expect((await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' })).status).toBe(200);
    });
    expect(started(second)).toMatchObject({ pid: started(first).pid, warm: true });
    expect(second.run.state).toBe('completed');
    expect(second.kinds.filter((k) => k.startsWith('tool') || k.startsWith('approval'))).toEqual(['tool_use', 'approval_requested', 'approval_resolved', 'tool_result']);
    expect(existsSync(join(s.cwd, 'warm-approved.txt'))).toBe(true);
  });

  it('a denied call does not run: the model is told, the turn goes on', async () => {
    ctx.model.script({ text: 'Creating it.', shell: 'touch warm-denied.txt' }, { text: 'I was not allowed.' });
    const s = await rig.session(session);
    const run = await rig.run(s, 'Create warm-denied.txt', async (live) => {
      const requested = await live.event('approval_requested');
      expect((await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'deny' })).status).toBe(200);
    });
    expect(run.run.state).toBe('completed');
    expect(run.events.find((e) => e.kind === 'tool_result').payload).toMatchObject({ is_error: true });
    expect(existsSync(join(s.cwd, 'warm-denied.txt'))).toBe(false);
    expect(ctx.model.requests[1].toolResults.join('')).toContain('canceled by the user');
  });

  it('an interrupt mid-tool is session/cancel: the run ends interrupted, the tool stops, the process stays warm', async () => {
    ctx.model.script({ text: 'Hello.' }, { text: 'Starting the slow job.', shell: 'sleep 47.5' }, { text: 'Back again.' });
    const s = await rig.session({ ...session, permission_mode: 'bypass' });
    const first = await rig.run(s, 'Say hello');
    const slow = await rig.run(s, 'Run the slow job', async (live) => {
      await live.event('tool_use');
      expect((await rig.server.request('POST', `/v1/runs/${live.runId}/interrupt`)).status).toBeLessThan(300);
    });
    expect(slow.run.state).toBe('interrupted');
    expect(slow.terminal.payload.kind).toBe('user_cancelled');
    expect(started(slow)).toMatchObject({ pid: started(first).pid, warm: true });
    // Unlike a headless run's SIGINT (gemini-cli.test.ts), session/cancel stops the running command.
    await untilGone('sleep 47.5');
    const after = await rig.run(s, 'Again');
    expect(after.run.state).toBe('completed');
    expect(started(after)).toMatchObject({ pid: started(first).pid, warm: true });
    expect(after.run.result.text).toBe('Back again.');
  });

  it('after warm_idle_ms the process is gone and the conversation goes on cold, headless with --resume', async () => {
    ctx.model.script({ text: 'First answer.' }, { text: 'Second answer.' });
    const s = await rig.session({ ...session, warm_idle_ms: 300 });
    const first = await rig.run(s, 'First question');
    await waitFor(() => !groupAlive(started(first).pid), 'the kept process to go', 15_000);
    const second = await rig.run(s, 'Second question');
    expect(second.run.state).toBe('completed');
    expect(started(second).warm).toBeUndefined();
    expect(started(second).args).toEqual(expect.arrayContaining(['--resume', first.run.result.provider_session_id]));
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
    expect(JSON.stringify(ctx.model.requests[1].body.contents)).toContain('First answer.');
  });
});
