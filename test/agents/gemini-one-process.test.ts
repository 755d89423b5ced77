import { describe, expect, it } from 'vitest';
import { GEMINI_MODEL, useServiceRig } from './harness.js';

/**
 * The real Gemini CLI runs as one process through the service (ProviderDefinition.setEnv,
 * src/providers/gemini/index.ts): GEMINI_CLI_NO_RELAUNCH keeps its launcher from starting the CLI
 * again as a child, as the child itself is told. Its shell tool counts the CLI's node processes in the
 * run's sandbox, whose /proc holds the run's processes alone.
 */

const ctx = useServiceRig('gemini');
const rig = ctx.rig;

describe('gemini (real CLI) through the service', () => {
  it('runs in one node process, not a launcher and its relaunched child', async () => {
    // Each process's argv on a line; `[g]emini` keeps this shell's own command line out of the count.
    const look = 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done | grep -c "^[^ ]*node .*[g]emini"; echo "relaunch=$GEMINI_CLI_NO_RELAUNCH"';
    ctx.model.script({ text: 'Looking.', shell: look }, { text: 'Done.' });
    const { run } = await rig.run(await rig.session({ model: GEMINI_MODEL, permission_mode: 'bypass' }), 'Count');
    expect(run.state).toBe('completed');
    const seen = ctx.model.requests[1]!.toolResults.join('');
    // The tool's output as gemini hands it to the model (a JSON string: its newlines escaped).
    expect(seen).toContain('Output: 1\\nrelaunch=true');
  });
});
