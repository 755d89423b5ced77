import { AsmError } from '../errors/kinds.js';
import { isTerminalRunState } from '../schemas/api.js';
import { TERMINAL_KINDS } from '../schemas/events.js';
import type { RunRecord, Store } from '../store/types.js';

/** Resolve with the run once it is terminal, or as it stands after timeoutMs. Listens to the run's session events. */
export async function waitForRun(store: Store, runId: string, timeoutMs: number): Promise<RunRecord> {
  const run = await store.runs.get(runId);
  if (!run) throw new AsmError('not_found', `run ${runId} not found`);
  if (isTerminalRunState(run.state)) return run;
  return new Promise<RunRecord>((resolve) => {
    let unsubscribe = () => {};
    const finish = () => {
      clearTimeout(timer);
      unsubscribe();
      store.runs.get(runId).then((r) => resolve(r ?? run), () => resolve(run));
    };
    const timer = setTimeout(finish, timeoutMs);
    unsubscribe = store.events.subscribe(run.session_id, (event) => {
      if (event.run_id === runId && TERMINAL_KINDS.has(event.kind)) finish();
    });
    // The run may have ended between the first read and the subscription.
    store.runs.get(runId).then((r) => r && isTerminalRunState(r.state) && finish());
  });
}
