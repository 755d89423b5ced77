import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { AgentRig, GEMINI_MODEL } from './harness.js';
import { startModelServer, type ModelServer } from './model-server.js';
import { expectNativeCodex, startedOf as started } from './service-scenarios.js';

/**
 * Prewarmed sessions (ASM_PREWARM) with the real CLIs against the loopback model server: the CLI
 * started with the session and told initialize waits; the first run's turn goes to it (`warm: true`
 * on a first run): claude's first user message, under the conversation id it was started with;
 * codex's thread/start and turn/start on the server; gemini's session/new and session/prompt over
 * ACP (a warm session's). Its tool asks for approval there like a cold run's.
 */

/** Per CLI: the session (gemini's is warm, over ACP, with its explicit model) and the model's tool step (claude and codex ask for a write that leaves their sandbox; gemini asks for any shell command). */
const CASES = {
  claude: { session: {}, tool: { shell: 'touch prewarmed.txt', escalate: true } },
  codex: { session: {}, tool: { shell: 'touch prewarmed.txt', escalate: true } },
  gemini: { session: { model: GEMINI_MODEL, warm: true }, tool: { shell: 'touch prewarmed.txt' } },
};

describe.each(['claude', 'codex', 'gemini'] as const)('%s (real CLI), prewarmed session', (name) => {
  const rig = new AgentRig(name);
  let model: ModelServer;
  beforeAll(async () => {
    model = await startModelServer();
    await rig.start(model, { ASM_PREWARM: `${name}:1` });
  });
  afterAll(async () => {
    await rig.stop();
    await model.close();
  });

  it("the session's first run goes to the process started with the session, and its tool asks for approval there", async () => {
    const load = async () => (await rig.server.app.cluster.nodes()).find((n) => n.id === rig.server.app.cluster.self)?.load;
    model.script({ text: 'Creating it.', ...CASES[name].tool }, { text: 'Created it.' });
    const s = await rig.session({ lane: 'core', ...CASES[name].session });
    await waitFor(async () => (await load()) === 1, "the prewarmed process in the node's load", 30_000);
    const first = await rig.run(s, 'Create prewarmed.txt', async (live) => {
      const requested = await live.event('approval_requested');
      // Still waiting on the approval, the prewarmed process is up: codex's is its native binary.
      if (name === 'codex') expectNativeCodex((await live.event('run_started')).payload.pid, 'app-server');
      expect((await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' })).status).toBe(200);
    });
    expect(started(first)).toMatchObject({ warm: true });
    expect(first.run.state).toBe('completed');
    expect(first.run.result.text).toContain('Created it.');
    expect(first.run.result.provider_session_id).toEqual(expect.any(String));
    if (name === 'claude') expect(started(first).args).toEqual(expect.arrayContaining(['--session-id', first.run.result.provider_session_id]));
    expect(existsSync(join(s.cwd, 'prewarmed.txt'))).toBe(true);
  });
});
