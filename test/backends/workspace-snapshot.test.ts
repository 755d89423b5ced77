/**
 * The core backend and the workspace's snapshot before a run (BackendRunSpec.workspaceSnapshot): a
 * CLI that reads its prompt from stdin is spawned first, the snapshot is asked for then, and the CLI
 * gets its first input only once it is taken; one that takes its prompt in its arguments is spawned
 * only then.
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
  it('spawns a stdin-prompt CLI first, then asks for the snapshot, and writes its prompt only once it is taken', async () => {
    const snapshot = deferred();
    const asked: string[][] = [];
    const { run, events, waitFor } = startRun(
      makeSpec(stdinPrompt, {
        workspaceSnapshot: () => {
          asked.push(kinds(events));
          return snapshot.promise;
        },
      }),
    );
    const { pid } = await waitFor('run_started');
    // Asked once the CLI was spawned (run_started carries its pid), so git's processes did not hold up its spawn.
    expect(asked).toEqual([['run_started']]);
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
    const taken = snapshot.promise.then(() => void order.push('snapshot'));
    const { run, events } = startRun(
      makeSpec(shell, {
        prompt: 'echo ran',
        workspaceSnapshot: () => {
          order.push(`asked with ${events.length} events`);
          return taken;
        },
      }),
    );
    // A witness run without a snapshot to wait for: once it has ended, the gated one would have started too.
    const witness = startRun(makeSpec(shell, { prompt: 'true', runId: 'run_witness', sessionId: 'ses_witness' }));
    await witness.run.done;
    order.push(`events before the snapshot: ${events.length}`);
    snapshot.resolve();
    await run.done;
    expect(order).toEqual(['asked with 0 events', 'events before the snapshot: 0', 'snapshot', 'asked with 1 events']);
    expect(kinds(events)).toEqual(['run_started', 'assistant_delta', 'result']);
  });
});
