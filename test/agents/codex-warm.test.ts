import { describe, expect, it } from 'vitest';
import { useServiceRig } from './harness.js';
import { expectNativeCodex, startedOf, twoWarmRuns } from './service-scenarios.js';

/**
 * A warm session with the real codex CLI (`codex app-server`, core lane) against the loopback model
 * server: the second run is the next turn/start on the same thread of the same server (same pid,
 * `warm: true`), the model sees the whole thread, and usage stays per run. The kept process is the
 * native binary itself, not the npm package's Node launcher (src/providers/codex/native.ts).
 */

describe('codex (real CLI), warm session', () => {
  const ctx = useServiceRig('codex');

  it('runs the second prompt on the same app-server and thread: the conversation goes on, usage per run', async () => {
    const { first, second } = await twoWarmRuns(ctx);
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
    const history = JSON.stringify(ctx.model.requests[1].body);
    expect(history).toContain('First question');
    expect(history).toContain('First answer.');
  });

  it('keeps the native binary, with no Node launcher beside it', async () => {
    ctx.model.script({ text: 'Kept.' });
    const session = await ctx.rig.session({ lane: 'core', warm: true });
    const run = await ctx.rig.run(session, 'Hello');
    expect(run.run.state).toBe('completed');
    expectNativeCodex(startedOf(run).pid, 'app-server');
  });
});
