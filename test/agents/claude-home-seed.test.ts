import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentRig, seedMade } from './harness.js';
import { startModelServer, type ModelServer } from './model-server.js';

/**
 * The real Claude Code in session HOMEs that start with the marks of the config migrations its first
 * start ran once (ProviderDefinition.homeSetup, src/providers/claude/process.ts): told initialize in a
 * throwaway HOME, it records them in ~/.claude.json, of which the seed keeps those marks alone; each
 * session's CLI still makes its own userID and machineID.
 */

describe('claude (real CLI), a HOME made from the seed', () => {
  const rig = new AgentRig('claude');
  const logLines: string[] = [];
  const root = mkdtempSync(join(tmpdir(), 'asm-claude-seed-'));
  let model: ModelServer;
  beforeAll(async () => {
    model = await startModelServer();
    await rig.start(model, { ASM_SANDBOX_ROOT: root }, {}, logLines);
  });
  afterAll(async () => {
    await rig.stop();
    await model.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('keeps the migrations\' marks alone of ~/.claude.json, and seeded sessions run with ids of their own', async () => {
    model.script({ text: 'Hello.' });
    expect((await rig.run(await rig.session(), 'Say hello')).run.state).toBe('completed');
    const seeded = await seedMade(logLines);
    expect(seeded).toMatchObject({ provider: 'claude', files: ['.claude.json'] });
    const seedsOfThisProcess = join(root, '.home-seeds', String(process.pid));
    const seed = JSON.parse(readFileSync(join(seedsOfThisProcess, readdirSync(seedsOfThisProcess)[0]!, '.claude.json'), 'utf8'));
    expect(Object.keys(seed).sort()).toEqual(['hasResetAutoModeOptInForDefaultOffer', 'migrationVersion', 'opusProMigrationComplete']);
    expect(seed.migrationVersion).toBeGreaterThan(0);

    const config = async () => {
      const session = await rig.session();
      model.script({ text: 'Hello again.' });
      expect((await rig.run(session, 'Say hello')).run.state).toBe('completed');
      // The CLI writes its ids there as it winds down, after the result line that ends the run.
      return vi.waitFor(
        () => {
          const made = JSON.parse(readFileSync(join(root, session.id, 'home', '.claude.json'), 'utf8'));
          expect(made.userID).toMatch(/^[0-9a-f]{64}$/);
          return made;
        },
        { timeout: 10_000, interval: 20 },
      );
    };
    const [a, b] = [await config(), await config()];
    // The CLI found the seed's file and added its own keys after the seed's (a fresh HOME's starts with firstStartTime).
    for (const made of [a, b]) expect(Object.keys(made).slice(0, Object.keys(seed).length)).toEqual(Object.keys(seed));
    expect(a.userID).not.toBe(b.userID);
  });
});
