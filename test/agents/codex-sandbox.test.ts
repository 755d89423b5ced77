import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useServiceRig } from './harness.js';

/**
 * The real codex app-server in ASM's sandbox, which hides the host's bwrap from it
 * (src/providers/codex/app-server.ts, HIDDEN_BWRAP): codex then sandboxes its commands with the
 * bubblewrap it ships, as strictly, and the notice it prints about the missing one reaches no event.
 */

const ctx = useServiceRig('codex');
const rig = ctx.rig;

describe('codex app-server (real CLI) in ASM\'s sandbox', () => {
  it('finds no bwrap of the host, still refuses a write in its read-only sandbox, and the run says nothing of it', async () => {
    const look = 'touch refused.txt; [ -f /usr/bin/bwrap ] && echo bwrap-seen || echo bwrap-hidden';
    ctx.model.script({ text: 'Looking.', shell: look }, { text: 'Done.' });
    // The default mode: read-only, asking before an escalation (none is asked for here).
    const s = await rig.session();
    const { run, kinds, events } = await rig.run(s, 'Look');
    expect(run.state).toBe('completed');
    expect(kinds).not.toContain('approval_requested');
    const seen = ctx.model.requests[1].toolResults.join('');
    expect(seen).toContain('bwrap-hidden');
    expect(seen).toContain("touch: cannot touch 'refused.txt': Read-only file system");
    expect(existsSync(join(s.cwd, 'refused.txt'))).toBe(false);
    // Neither its stderr notice nor its configWarning became an event (stderr events stay out of `kinds`).
    expect(JSON.stringify(events)).not.toContain('bubblewrap');
  });
});
