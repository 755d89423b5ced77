import { AsmError } from '../errors/kinds.js';
import type { DeadLetter, LaneEngine } from '../lanes/types.js';
import type { CreateRunBody } from '../schemas/api.js';
import type { RunRecord, Store } from '../store/types.js';
import { EXECUTE_RUN } from './commands.js';
import { agentOptionsBody } from './run-options.js';

export interface DeadLettersDeps {
  engine: LaneEngine;
  store: Store;
  /** Normal admission of a new run (the facade's submitRun). */
  submitRun: (tenant: string, sessionId: string, body: CreateRunBody) => Promise<RunRecord>;
}

/** An admin's view of the DLQ: every tenant's letters. */
export const EVERY_TENANT = Symbol('every tenant');

/** Who looks at the DLQ: a tenant (by id) sees its own runs' letters, an admin every letter. */
export type DlqViewer = string | typeof EVERY_TENANT;

/** The lanes' dead-letter queue as a caller sees it: failed runs of its own sessions (an admin's: all), which it may retry or delete. */
export class DeadLetters {
  constructor(private readonly deps: DeadLettersDeps) {}

  async list(viewer: DlqViewer): Promise<DeadLetter[]> {
    const letters = await this.deps.engine.deadLetters();
    const visible: DeadLetter[] = [];
    for (const letter of letters) if (await this.sees(viewer, letter)) visible.push(letter);
    return visible;
  }

  /**
   * Retry a dead letter. A failed run is never re-executed (a run has exactly one terminal event):
   * its prompt is submitted again as a new run of the same session, through normal admission, as
   * the session's tenant (also when an admin retries it).
   */
  async retry(viewer: DlqViewer, id: string): Promise<{ command_id: string; run_id: string | null }> {
    const { engine, store } = this.deps;
    const letter = await this.find(viewer, id);
    const runId = runIdOf(letter);
    if (!runId) return { command_id: (await engine.retryDeadLetter(id)).id, run_id: null };
    // An admin sees letters whose session (with its runs) has since been evicted.
    const failed = await store.runs.get(runId);
    if (!failed) throw new AsmError('not_found', `dead letter ${id}: its run ${runId} no longer exists`);
    const retry = await this.deps.submitRun(failed.tenant, failed.session_id, {
      prompt: failed.prompt,
      queue: failed.queue,
      lane: failed.options.lane,
      execution_mode: failed.options.execution_mode,
      driver_opts: failed.options.driver_opts,
      continuation: failed.options.continuation,
      ...agentOptionsBody(failed.options.agent),
      metadata: { ...failed.metadata, retry_of: failed.id },
    });
    await engine.deleteDeadLetter(id);
    return { command_id: retry.id, run_id: retry.id };
  }

  async delete(viewer: DlqViewer, id: string): Promise<void> {
    await this.find(viewer, id);
    await this.deps.engine.deleteDeadLetter(id);
  }

  private async find(viewer: DlqViewer, id: string): Promise<DeadLetter> {
    const letter = (await this.deps.engine.deadLetters()).find((l) => l.commandId === id);
    if (!letter || !(await this.sees(viewer, letter))) throw new AsmError('not_found', `dead letter ${id} not found`);
    return letter;
  }

  private async sees(viewer: DlqViewer, letter: DeadLetter): Promise<boolean> {
    if (viewer === EVERY_TENANT) return true;
    const runId = runIdOf(letter);
    const run = runId ? await this.deps.store.runs.get(runId) : undefined;
    return run?.tenant === viewer;
  }
}

function runIdOf(letter: DeadLetter): string | undefined {
  return letter.commandType === EXECUTE_RUN ? (letter.payload as { run_id?: string })?.run_id : undefined;
}
