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

/** What a process tells of the ends of the runs it executes itself (RunRecorder). */
export interface LocalRunEnds {
  /** Hears each end this process stores of a run of `sessionId`, with the run as it ended; returns the unsubscribe. */
  onSessionRunEnded(sessionId: string, listener: (ended: RunRecord) => void): () => void;
  /** Resolves once the writes this process has queued for the run (its end among them) are done, or failed. */
  written(runId: string): Promise<void>;
}

/**
 * The ends of a session's runs, heard from the session's events from now on. A watch made before
 * the run it waits for exists (a submit with `wait: true`) hears each of that run's events, so it
 * needs no read to tell whether the run ended before it began: a round trip less in Redis mode
 * (bench/RESULTS.md, twenty-eighth pass). With `local`, the end of a run this process executes is
 * heard as it is recorded, with the run as it ended: no wait for the event to come back from the
 * store, and no read of the run (thirty-fourth pass).
 */
export class RunEnds {
  /** Runs that ended before `until` was called (few: a session's runs during one submit). */
  private readonly ended = new Set<string>();
  /** The runs of `ended`, and then the awaited one, as this process recorded their ends. */
  private readonly recorded = new Map<string, RunRecord>();
  private awaited: { runId: string; heard: () => void } | undefined;
  private readonly unsubscribe: () => void;
  private readonly unlisten: () => void;

  constructor(
    private readonly store: Store,
    sessionId: string,
    private readonly local?: LocalRunEnds,
  ) {
    this.unsubscribe = store.events.subscribe(sessionId, (event) => {
      if (TERMINAL_KINDS.has(event.kind)) this.heard(event.run_id);
    });
    this.unlisten = local?.onSessionRunEnded(sessionId, (ended) => this.heard(ended.id, ended)) ?? (() => undefined);
  }

  /** A run's end, heard from the store's events or, with the run as it ended, from this process's recorder. */
  private heard(runId: string, ended?: RunRecord): void {
    if (this.awaited !== undefined && this.awaited.runId !== runId) return;
    if (ended) this.recorded.set(runId, ended);
    if (this.awaited) this.awaited.heard();
    else this.ended.add(runId);
  }

  /** The run once its end is heard, or as it stands after timeoutMs (`run` where it cannot be read). */
  async until(run: RunRecord, timeoutMs: number): Promise<RunRecord> {
    let endHeard = this.ended.has(run.id);
    if (!endHeard) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.awaited = {
          runId: run.id,
          heard: () => {
            endHeard = true;
            resolve();
          },
        };
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    }
    // The store's event may come before this process's recorder tells of the end it is storing (two
    // connections in Redis mode; the memory store tells its watchers within the append): its writes
    // for the run are waited for, and a run executed elsewhere has none. A run still going when the
    // wait timed out is read as it stands, not after the writes queued for it.
    if (endHeard && !this.recorded.has(run.id)) await this.local?.written(run.id);
    return this.recorded.get(run.id) ?? (await this.store.runs.get(run.id).catch(() => undefined)) ?? run;
  }

  stop(): void {
    this.unsubscribe();
    this.unlisten();
  }
}

async function readRun(store: Store, runId: string): Promise<RunRecord> {
  const run = await store.runs.get(runId);
  if (!run) throw new AsmError('not_found', `run ${runId} not found`);
  return run;
}
