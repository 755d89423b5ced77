import { describe, expect, it } from 'vitest';
import { useServiceRig, type FinishedRun } from './harness.js';

/**
 * A warm session with the real codex CLI (`codex app-server`, core lane) against the loopback model
 * server: the second run is the next turn/start on the same thread of the same server (same pid,
 * `warm: true`), the model sees the whole thread, and usage stays per run.
 */

const started = (r: FinishedRun) => r.events.find((e) => e.kind === 'run_started').payload;

describe('codex (real CLI), warm session', () => {
  const ctx = useServiceRig('codex');
  const rig = ctx.rig;

  it('runs the second prompt on the same app-server and thread: the conversation goes on, usage per run', async () => {
    ctx.model.script({ text: 'First answer.', usage: { input: 120, output: 8 } }, { text: 'Second answer.', usage: { input: 300, output: 5 } });
    const s = await rig.session({ lane: 'core', warm: true });
    const first = await rig.run(s, 'First question');
    const second = await rig.run(s, 'Second question');
    expect(first.run.state).toBe('completed');
    expect(second.run.state).toBe('completed');
    expect(started(second)).toMatchObject({ pid: started(first).pid, warm: true });
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
    expect(second.run.result.text).toBe('Second answer.');
    expect(first.run.result.usage).toMatchObject({ input_tokens: 120, output_tokens: 8 });
    expect(second.run.result.usage).toMatchObject({ input_tokens: 300, output_tokens: 5 });
    const history = JSON.stringify(ctx.model.requests[1].body);
    expect(history).toContain('First question');
    expect(history).toContain('First answer.');
  });
});
