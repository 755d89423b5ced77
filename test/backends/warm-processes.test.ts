import { describe, expect, it } from 'vitest';
import { WarmProcesses } from '../../src/backends/warm-processes.js';

/**
 * The prewarm pool's room (ASM_PREWARM), counted while processes start: sessions created at once
 * each ask for a place before any process has started, and only as many as the pool holds get one.
 * Processes taken, parked and stopped are covered through the service (test/e2e/warm.test.ts).
 */
describe('WarmProcesses.reservePrewarm', () => {
  it('gives a provider at most its ASM_PREWARM places, counting those still starting, and a cancelled place back', () => {
    const pool = new WarmProcesses(16, { claude: 2 });
    const first = pool.reservePrewarm('claude');
    const second = pool.reservePrewarm('claude');
    expect(first).not.toBeNull();
    expect(second).not.toBeNull();
    expect(pool.reservePrewarm('claude')).toBeNull();
    second!.cancel();
    second!.cancel(); // once only
    expect(pool.reservePrewarm('claude')).not.toBeNull();
    expect(pool.reservePrewarm('claude')).toBeNull();
  });

  it('gives none to a provider ASM_PREWARM does not name, nor beyond ASM_MAX_WARM_PROCESSES', () => {
    const pool = new WarmProcesses(1, { claude: 2, codex: 0 });
    expect(pool.reservePrewarm('codex')).toBeNull();
    expect(pool.reservePrewarm('gemini')).toBeNull();
    expect(pool.reservePrewarm('claude')).not.toBeNull();
    // A second would have to stop another session's process to be parked.
    expect(pool.reservePrewarm('claude')).toBeNull();
  });
});
