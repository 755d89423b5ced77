import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentRig, seedMade } from './harness.js';
import { startModelServer, type ModelServer } from './model-server.js';

/**
 * The real codex CLI in session HOMEs that start with the databases its first start made once
 * (ProviderDefinition.homeSetup, src/backends/home-seeds.ts): `codex app-server`, told initialize in a
 * throwaway HOME, makes its SQLite databases; a session whose HOME was made from them runs, and its
 * second run continues the same thread.
 */

describe('codex (real CLI), a HOME made from the seed', () => {
  const rig = new AgentRig('codex');
  const logLines: string[] = [];
  let model: ModelServer;
  beforeAll(async () => {
    model = await startModelServer();
    await rig.start(model, {}, {}, logLines);
  });
  afterAll(async () => {
    await rig.stop();
    await model.close();
  });

  it('keeps the databases alone, and a seeded session runs and continues its thread', async () => {
    model.script({ text: 'Hello.' });
    expect((await rig.run(await rig.session(), 'Say hello')).run.state).toBe('completed');
    // The first session's HOME asked for the seed, which is made meanwhile.
    const seeded = await seedMade(logLines);
    expect(seeded.provider).toBe('codex');
    expect(seeded.files).toContain('.codex/state_5.sqlite');
    for (const file of seeded.files) expect(file).toMatch(/^\.codex\/[^/]+\.sqlite(-wal)?$/);

    const session = await rig.session();
    model.script({ text: 'First answer.' }, { text: 'Second answer.' });
    const first = await rig.run(session, 'First question');
    const second = await rig.run(session, 'Second question');
    expect([first.run.state, second.run.state]).toEqual(['completed', 'completed']);
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
    expect(JSON.stringify(model.requests.at(-1)!.body)).toContain('First answer.');
  });
});
