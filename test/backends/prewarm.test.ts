import { describe, expect, it } from 'vitest';
import { CoreBackend } from '../../src/backends/core.js';
import { WarmProcesses } from '../../src/backends/warm-processes.js';
import claude from '../../src/providers/claude/index.js';
import { processesWith } from '../faults/processes.js';
import { FAKE_CLAUDE } from '../helpers/server.js';
import { testSandbox } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';
import { makeSpec, TEST_LIMITS } from './harness.js';

/**
 * Prewarmed processes (ASM_PREWARM) in the pool and the core backend. The pool's room is counted
 * while processes start: sessions created at once each ask for a place before any process has
 * started, and only as many as the pool holds get one; a first run waits for its session's process
 * while it starts. A process whose session closes, or whose service stops, while it starts (the fake
 * claude, in the sandbox) goes once started. Processes taken, parked and stopped otherwise are
 * covered through the service (test/e2e/warm.test.ts).
 */
describe('WarmProcesses.reservePrewarm', () => {
  it('gives a provider at most its ASM_PREWARM places, counting those still starting, and a cancelled place back', () => {
    const pool = new WarmProcesses(16, { claude: 2 });
    const first = pool.reservePrewarm('s1', 'claude');
    const second = pool.reservePrewarm('s2', 'claude');
    expect(first).not.toBeNull();
    expect(second).not.toBeNull();
    expect(pool.reservePrewarm('s3', 'claude')).toBeNull();
    second!.cancel();
    second!.cancel(); // once only
    expect(pool.reservePrewarm('s3', 'claude')).not.toBeNull();
    expect(pool.reservePrewarm('s4', 'claude')).toBeNull();
  });

  it('gives none to a provider ASM_PREWARM does not name, beyond ASM_MAX_WARM_PROCESSES, or twice to a session', () => {
    const pool = new WarmProcesses(2, { claude: 3, codex: 0 });
    expect(pool.reservePrewarm('s1', 'codex')).toBeNull();
    expect(pool.reservePrewarm('s1', 'gemini')).toBeNull();
    expect(pool.reservePrewarm('s1', 'claude')).not.toBeNull();
    expect(pool.reservePrewarm('s1', 'claude')).toBeNull();
    expect(pool.reservePrewarm('s2', 'claude')).not.toBeNull();
    // A third would have to stop another session's process to be parked.
    expect(pool.reservePrewarm('s3', 'claude')).toBeNull();
  });

  it("holds the session's first run until its process starting is given up", async () => {
    const pool = new WarmProcesses(16, { claude: 1 });
    await pool.prewarming('s1'); // none starting: at once
    const reservation = pool.reservePrewarm('s1', 'claude')!;
    let settled = false;
    const waiting = pool.prewarming('s1').then(() => (settled = true));
    // Every pending promise callback runs before setImmediate's: one that could settle has.
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    reservation.cancel();
    await waiting;
    expect(settled).toBe(true);
  });
});

describe('CoreBackend.prewarm', () => {
  const sandboxed = testSandbox();
  // The model names the processes of this file's tests on their command lines: no other's count.
  const marker = `prewarm-test-${process.pid}`;
  const fakeClaude = (sessionId: string) => makeSpec(claude, { binary: FAKE_CLAUDE, sessionId, model: marker });

  it('stops a process whose session closed while it started, and its first run waits until it is gone', async () => {
    const warm = new WarmProcesses(16, { claude: 1 });
    const backend = new CoreBackend(TEST_LIMITS, await sandboxed, warm);
    const started = backend.prewarm('ses_closed', 'claude', 60_000, async () => {
      backend.releaseSession('ses_closed');
      return fakeClaude('ses_closed');
    });
    expect(await started).toBe(false);
    await warm.prewarming('ses_closed');
    expect(warm.holds('ses_closed')).toBe(false);
    expect(backend.processGroups()).toEqual([]);
    await waitFor(() => processesWith(marker).length === 0, 'no process of it left in its sandbox', 5_000);
  });

  it('stops a process that was starting when the service stopped, and waits until it is gone', async () => {
    const warm = new WarmProcesses(16, { claude: 1 });
    const backend = new CoreBackend(TEST_LIMITS, await sandboxed, warm);
    let stopping: Promise<void> | undefined;
    const started = backend.prewarm('ses_stopped', 'claude', 60_000, async () => {
      stopping = warm.stopAll();
      return fakeClaude('ses_stopped');
    });
    expect(await started).toBe(false);
    await stopping;
    expect(backend.processGroups()).toEqual([]);
    await waitFor(() => processesWith(marker).length === 0, 'no process of it left in its sandbox', 5_000);
  });

  it('parks a started process for the first run, holding the conversation it was started with', async () => {
    const warm = new WarmProcesses(16, { claude: 1 });
    const backend = new CoreBackend(TEST_LIMITS, await sandboxed, warm);
    expect(await backend.prewarm('ses_kept', 'claude', 60_000, async () => fakeClaude('ses_kept'))).toBe(true);
    expect(warm.holds('ses_kept')).toBe(true);
    expect(backend.processGroups()).toHaveLength(1);
    await warm.stopAll();
    expect(backend.processGroups()).toEqual([]);
  });
});
