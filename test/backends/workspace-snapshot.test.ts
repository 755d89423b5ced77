/**
 * The core backend and the workspace's snapshot before a run (BackendRunSpec.workspaceSnapshot): a
 * CLI that reads its prompt from stdin is spawned while the snapshot is taken and gets its first
 * input only once it is; one that takes its prompt in its arguments is spawned only then.
 */
import { describe, expect, it } from 'vitest';
import shell from '../../src/providers/shell.js';
import type { ProviderDefinition } from '../../src/providers/types.js';
import { kinds, makeSpec, startRun, terminalOf, waitForMembers } from './harness.js';

/** The shell provider as a stdin-prompt CLI: `sh` reads one line and prints it, the line written by start(). */
const stdinPrompt: ProviderDefinition = {
  ...shell,
  create: (input) => ({ ...shell.create(input), args: ['-c', 'read line; echo "got $line"'], stdin: 'control', start: () => ({ write: ['the prompt'], endInput: true }) }),
};

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

describe('the workspace snapshot before a run', () => {
  it('spawns a stdin-prompt CLI meanwhile and writes its prompt only once the snapshot is taken', async () => {
    const snapshot = deferred();
    const { run, events, waitFor } = startRun(makeSpec(stdinPrompt, { workspaceSnapshot: snapshot.promise }));
    const { pid } = await waitFor('run_started');
    // The CLI is up and waiting for its input, which has not come: nothing but run_started so far.
    await waitForMembers(pid!, 'sh');
    expect(kinds(events)).toEqual(['run_started']);
    snapshot.resolve();
    await run.done;
    expect(events.filter((e) => e.kind === 'assistant_delta').map((e) => e.payload)).toEqual([{ content: 'got the prompt\n', index: 0 }]);
    expect(terminalOf(events).kind).toBe('result');
  });

  it('starts an argument-prompt CLI only once the snapshot is taken', async () => {
    const snapshot = deferred();
    const order: string[] = [];
    const { run, events } = startRun(makeSpec(shell, { prompt: 'echo ran', workspaceSnapshot: snapshot.promise.then(() => void order.push('snapshot')) }));
    // A witness run without a snapshot to wait for: once it has ended, the gated one would have started too.
    const witness = startRun(makeSpec(shell, { prompt: 'true', runId: 'run_witness', sessionId: 'ses_witness' }));
    await witness.run.done;
    order.push(`events before the snapshot: ${events.length}`);
    snapshot.resolve();
    await run.done;
    expect(order).toEqual(['events before the snapshot: 0', 'snapshot']);
    expect(kinds(events)).toEqual(['run_started', 'assistant_delta', 'result']);
  });
});
