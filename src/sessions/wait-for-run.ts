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
  const session = sessionId ?? (await readRun(store, runId)).session_id;
  let terminal!: () => void;
  const ended = new Promise<void>((resolve) => (terminal = resolve));
  const unsubscribe = store.events.subscribe(session, (event) => {
    if (event.run_id === runId && TERMINAL_KINDS.has(event.kind)) terminal();
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    // Read after subscribing: a run that ends in between is seen by this read or by the listener.
    const run = await readRun(store, runId);
    if (isTerminalRunState(run.state)) return run;
    await Promise.race([ended, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    return (await store.runs.get(runId).catch(() => undefined)) ?? run;
  } finally {
    clearTimeout(timer);
    unsubscribe();
  }
}

async function readRun(store: Store, runId: string): Promise<RunRecord> {
  const run = await store.runs.get(runId);
  if (!run) throw new AsmError('not_found', `run ${runId} not found`);
  return run;
}
