import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stopProcessesWith, untilRunning, useServiceRig } from './harness.js';

/**
 * Codex on its other transport, `codex exec --json`, which the codex provider uses for the
 * permission modes that can never ask (bypass, plan): the real CLI through the
 * service against the model server. The app-server transport has its own file (codex.test.ts).
 */

const ctx = useServiceRig('codex');
const rig = ctx.rig;
const EXEC = { permission_mode: 'bypass' };
const markers: string[] = [];

afterEach(() => {
  for (const marker of markers.splice(0)) stopProcessesWith(marker);
});

describe('codex exec (real CLI) through the service', () => {
  it('answers a plain prompt: text and usage from the model', async () => {
    ctx.model.script({ text: 'Hello from the model.', usage: { input: 120, output: 8 } });
    const { run, kinds } = await rig.run(await rig.session(EXEC), 'Say hello');
    expect(kinds[0]).toBe('run_queued');
    expect(kinds).toContain('assistant_message');
    expect(kinds.at(-1)).toBe('result');
    expect(run).toMatchObject({ state: 'completed', result: { text: 'Hello from the model.', usage: { input_tokens: 120, output_tokens: 8 } } });
  });

  it('runs a shell command without asking, and writes in the workspace', async () => {
    ctx.model.script({ text: 'Creating it.', shell: 'touch made-by-exec.txt' }, { text: 'Done.' });
    const s = await rig.session(EXEC);
    const { run, kinds } = await rig.run(s, 'Create made-by-exec.txt');
    expect(kinds).not.toContain('approval_requested');
    expect(kinds).toEqual(expect.arrayContaining(['tool_use', 'tool_result']));
    expect(existsSync(join(s.cwd, 'made-by-exec.txt'))).toBe(true);
    expect(run.state).toBe('completed');
  });

  it('interrupts a run in the middle of a tool (SIGINT; exec prints no terminal event): user_cancelled', async () => {
    const marker = 'sleep 47.5';
    markers.push(marker);
    ctx.model.script({ text: 'Starting the slow job.', shell: marker }, { text: 'never sent' });
    const { run, terminal } = await rig.run(await rig.session(EXEC), 'Run the slow job', async (live) => {
      await live.event('tool_use');
      await untilRunning(marker);
      expect((await rig.server.request('POST', `/v1/runs/${live.runId}/interrupt`)).status).toBe(202);
    });
    expect(terminal.payload.kind).toBe('user_cancelled');
    expect(run.state).toBe('interrupted');
    expect(ctx.model.requests).toHaveLength(1);
  });

  it('fails a run whose model answers HTTP 401 with auth_error', async () => {
    ctx.model.script({ httpStatus: 401, message: 'scripted 401' });
    const { run, terminal } = await rig.run(await rig.session(EXEC), 'Say hello');
    expect(terminal.kind).toBe('error');
    expect(terminal.payload.kind).toBe('auth_error');
    expect(run.state).toBe('failed');
  });

  it('continues the thread on the next run (exec resume): the model sees the first turn', async () => {
    ctx.model.script({ text: 'Noted: pineapple.' }, { text: 'The word was pineapple.' });
    const s = await rig.session(EXEC);
    const first = await rig.run(s, 'Remember the word pineapple');
    const second = await rig.run(s, 'Which word did I ask you to remember?');
    expect(second.run.state).toBe('completed');
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
    const history = JSON.stringify(ctx.model.requests[1].body);
    expect(history).toContain('Remember the word pineapple');
    expect(history).toContain('Noted: pineapple.');
  });
});
