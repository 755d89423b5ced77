import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useServiceRig } from './harness.js';
import { startedOf as started, twoWarmRuns } from './service-scenarios.js';

/**
 * A warm session with the real Claude Code CLI (core lane) against the loopback model server: the
 * second run's prompt goes to the same process as its next user message (same pid, `warm: true`),
 * the model sees the whole conversation, usage stays per run, and approvals work on the kept process.
 */

describe('claude (real CLI), warm session', () => {
  const ctx = useServiceRig('claude');
  const rig = ctx.rig;

  it('runs the second prompt on the same process: the conversation goes on, usage per run', async () => {
    const { first, second } = await twoWarmRuns(ctx);
    expect(started(second)).toMatchObject({ provider_session_id: started(first).provider_session_id });
    expect(second.kinds).toEqual(['run_queued', 'run_started', 'assistant_message', 'cost_update', 'result']);
    expect(second.run.result.cost_usd).toBeGreaterThan(0);
    const history = JSON.stringify(ctx.model.requests[1].body.messages);
    expect(history).toContain('First question');
    expect(history).toContain('First answer.');
    expect(history).toContain('Second question');
  });

  it('asks for approval on the kept process, and the tool runs there', async () => {
    ctx.model.script({ text: 'Hello.' }, { text: 'Creating it.', shell: 'touch warm-approved.txt', escalate: true }, { text: 'Created it.' });
    const s = await rig.session({ lane: 'core', warm: true });
    const first = await rig.run(s, 'Say hello');
    const second = await rig.run(s, 'Create warm-approved.txt', async (live) => {
      const requested = await live.event('approval_requested');
      expect((await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' })).status).toBe(200);
    });
    expect(started(second)).toMatchObject({ pid: started(first).pid, warm: true });
    expect(second.run.state).toBe('completed');
    expect(second.run.result.text).toContain('Created it.');
    expect(existsSync(join(s.cwd, 'warm-approved.txt'))).toBe(true);
  });
});
