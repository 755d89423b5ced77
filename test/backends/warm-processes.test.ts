import { describe, expect, it } from 'vitest';
import { WarmProcesses } from '../../src/backends/warm-processes.js';

/**
 * The prewarm pool's room (ASM_PREWARM), counted while processes start: sessions created at once
 * each ask for a place before any process has started, and only as many as the pool holds get one;
 * a first run waits for its session's process while it starts. Processes taken, parked and stopped
 * are covered through the service (test/e2e/warm.test.ts).
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
