import type { ProviderTotals } from '../types.js';

/**
 * The totals gemini reports for its conversation: the number of turns it has had. Its usage is per
 * run on both transports (nothing cumulative to subtract), but a warm session's kept process must
 * know whether the conversation it holds went on elsewhere (a headless `--resume` run on another API
 * process): backends/warm-processes.ts compares the totals it was parked at with the session's.
 */
export function afterTurn(previous: ProviderTotals | undefined): ProviderTotals {
  return { turns: (previous?.turns ?? 0) + 1 };
}
