import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AgentName } from '../../scripts/install-agents.js';
import { useServiceRig } from './harness.js';

/**
 * permission_mode `plan` with the real CLIs through the service: the model asks to write a file and
 * nothing is written; nobody is asked (claude's plan mode executes no tool, codex runs in a read-only
 * sandbox that may not be left), and the run still completes with the model's answer.
 */
for (const name of ['claude', 'codex'] as AgentName[]) {
  describe(`${name} (real CLI) in plan mode`, () => {
    const ctx = useServiceRig(name);

    it('refuses to write a file, without asking', async () => {
      ctx.model.script({ text: 'Creating it.', shell: 'touch planned.txt' }, { text: 'I did not change anything.' });
      const s = await ctx.rig.session({ permission_mode: 'plan', approval_timeout_ms: 5_000 });
      const { run, kinds } = await ctx.rig.run(s, 'Create planned.txt');
      expect(existsSync(join(s.cwd, 'planned.txt'))).toBe(false);
      expect(kinds).not.toContain('approval_requested');
      expect(run.state).toBe('completed');
      expect(run.result.text).toContain('I did not change anything.');
    });
  });
}
