import { AsmError } from '../errors/kinds.js';
import { isTerminalRunState } from '../schemas/api.js';
import { TERMINAL_KINDS } from '../schemas/events.js';
import type { RunRecord, Store } from '../store/types.js';

/**
 * Resolve with the run once it is terminal, or as it stands after timeoutMs. Listens to the run's
 * session events. A caller that knows the run's session (`sessionId`) saves a read of the run: the
 * subscription comes first, so one read tells whether the run ended before it.
 */
export async function waitForRun(store: Store, runId: string, timeoutMs: number, sessionId?: string): Promise<RunRecord> {
  const ends = new RunEnds(store, sessionId ?? (await readRun(store, runId)).session_id);
  try {
    // Read after subscribing: a run that ends in between is seen by this read or by the watch.
    const run = await readRun(store, runId);
    return isTerminalRunState(run.state) ? run : await ends.until(run, timeoutMs);
  } finally {
    ends.stop();
  }
}

/**
 * The ends of a session's runs, heard from the session's events from now on. A watch made before
 * the run it waits for exists (a submit with `wait: true`) hears each of that run's events, so it
 * needs no read to tell whether the run ended before it began: a round trip less in Redis mode
 * (bench/RESULTS.md, twenty-eighth pass).
 */
export class RunEnds {
  /** Runs that ended before `until` was called (few: a session's runs during one submit). */
  private readonly ended = new Set<string>();
  private awaited: { runId: string; heard: () => void } | undefined;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly store: Store,
    sessionId: string,
  ) {
    this.unsubscribe = store.events.subscribe(sessionId, (event) => {
      if (!TERMINAL_KINDS.has(event.kind)) return;
      if (this.awaited === undefined) this.ended.add(event.run_id);
      else if (this.awaited.runId === event.run_id) this.awaited.heard();
    });
  }

  /** The run once its end is heard, or as it stands after timeoutMs (`run` where it cannot be read). */
  async until(run: RunRecord, timeoutMs: number): Promise<RunRecord> {
    if (!this.ended.has(run.id)) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.awaited = { runId: run.id, heard: resolve };
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    }
    return (await this.store.runs.get(run.id).catch(() => undefined)) ?? run;
  }

  stop(): void {
    this.unsubscribe();
  }
}

async function readRun(store: Store, runId: string): Promise<RunRecord> {
  const run = await store.runs.get(runId);
  if (!run) throw new AsmError('not_found', `run ${runId} not found`);
  return run;
}
