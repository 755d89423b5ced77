import { describe, expect, it } from 'vitest';
import { CoreBackend } from '../../src/backends/core.js';
import shell from '../../src/providers/shell.js';
import type { ProviderEvent } from '../../src/schemas/events.js';
import { makeSpec, TEST_LIMITS } from '../backends/harness.js';
import { testSandbox } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A CLI that prints faster than the service records: the backend stops reading its stdout while the
 * sink has too many events pending (run-lifecycle.ts, MAX_PENDING_EVENTS), so the CLI blocks on its
 * pipe instead of the service buffering its output. Found by the fault probe (issue 13, finding 1):
 * 100 MB printed took the service to 1.7 GB.
 */
describe('backpressure from the event store to the CLI', () => {
  it('holds a flooding CLI at its pipe while events are pending, and lets it finish once they are recorded', async () => {
    const sandbox = await testSandbox();
    const events: ProviderEvent[] = [];
    const pending: Array<() => void> = [];
    let recording = true;
    // 20 MB in 1 M short lines, then a marker on stderr once everything is written.
    const prompt = "yes 'flood line for the backpressure test' | head -c 20000000; echo written >&2";
    const run = new CoreBackend(TEST_LIMITS, sandbox).start(makeSpec(shell, { prompt, idleTimeoutMs: 0 }), (event) => {
      events.push(event);
      if (!recording) return Promise.resolve();
      // A store that takes its time: each event stays pending until the test lets it through.
      return new Promise<void>((resolve) => pending.push(resolve));
    });

    await waitFor(() => pending.length > 256, 'the sink to hold more than 256 pending events');
    // Let the pipe fill and give the CLI every chance to go on if it could.
    const held = pending.length;
    await new Promise((resolve) => setTimeout(resolve, 500));
    // Reading stopped: at most what was already read (one pipe chunk of lines) came in after the pause.
    expect(pending.length - held).toBeLessThan(2_000);
    expect(events.some((e) => e.kind === 'stderr')).toBe(false);
    expect(events.length).toBeLessThan(10_000);

    recording = false;
    for (const resolve of pending.splice(0)) resolve();
    await run.done;
    const deltas = events.filter((e) => e.kind === 'assistant_delta');
    const bytes = deltas.reduce((sum, e) => sum + Buffer.byteLength(String((e.payload as { content: string }).content)), 0);
    // Every byte (the shell provider ends the cut last line with a newline of its own).
    expect(bytes - 20_000_000).toBeGreaterThanOrEqual(0);
    expect(bytes - 20_000_000).toBeLessThanOrEqual(1);
    expect(events.at(-1)!.kind).toBe('result');
    await sandbox.close();
  });
});
