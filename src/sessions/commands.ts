import { AsmError, type ErrorBody } from '../errors/kinds.js';
import { fromLaneError } from '../errors/from-lanes.js';
import type { CommandContext, CommandHandle, LaneEngine } from '../lanes/types.js';
import type { ApprovalDecision } from '../providers/types.js';
import type { ApprovalRecord, RunRecord, SessionRecord } from '../store/types.js';
import { contextOf, currentTraceparent, inSpan } from './tracing.js';

/**
 * Every lane command of the service, by type: its payload and its answer. The handlers are one map
 * (`CommandHandlers`, filled in service.ts), so a reader goes from a `call` to its handler by the type.
 */
export interface LaneCommands {
  /** `request_id`: the request that closed it, named on the close's log line. */
  'session.close': { payload: { id: string; request_id?: string }; result: SessionRecord };
  'run.interrupt': { payload: { id: string }; result: RunRecord };
  'approval.decide': { payload: { id: string; decision: ApprovalDecision; reason: string | null }; result: ApprovalRecord };
  /** Node maintenance on the system lane: ending the runs of nodes that stopped heartbeating (sweeps.ts). */
  'node.end_lost_runs': { payload: { run_ids: string[] }; result: null };
  /** A run's execution; its command id is the run id. Fails (feeding the DLQ) when the run failed. */
  /** `session_id` lets the run and its session be read together; a job queued by an earlier version has none. */
  'run.execute': { payload: { run_id: string; session_id?: string }; result: RunOutcome };
}

export type CommandType = keyof LaneCommands;
export type RunOutcome = { run_id: string; state: string };

export const EXECUTE_RUN = 'run.execute' satisfies CommandType;

export type CommandHandlers = {
  [K in CommandType]: (payload: LaneCommands[K]['payload'], ctx: CommandContext) => Promise<LaneCommands[K]['result']>;
};

/** Commands a caller waits on. Their refusals travel as error bodies, so a refused request is not a failed command. */
type UserFacing = Exclude<CommandType, typeof EXECUTE_RUN>;
type Outcome<T> = { ok: true; value: T } | { ok: false; error: ErrorBody };
const LATE = Symbol('late');

/** The service's side of the lane engine: typed submission and registration of its commands. */
export class CommandBus {
  /** `startWithinMs`: how long a `call` waits for its command to start (ASM_COMMAND_WAIT_MS). */
  constructor(
    private readonly engine: LaneEngine,
    private readonly startWithinMs: number,
  ) {}

  registerAll(handlers: CommandHandlers): void {
    for (const type of Object.keys(handlers) as CommandType[]) {
      const handler = traced(handlers[type] as (payload: unknown, ctx: CommandContext) => Promise<unknown>);
      this.engine.register(type, type === EXECUTE_RUN ? handler : answering(handler));
    }
  }

  /** Run a user-facing command on `lane` and return its answer; refusals and lane errors throw AsmErrors. */
  async call<K extends UserFacing>(lane: string, type: K, payload: LaneCommands[K]['payload']): Promise<LaneCommands[K]['result']> {
    let outcome: Outcome<LaneCommands[K]['result']>;
    try {
      const handle = await this.engine.submit(lane, { type, payload: withTrace(payload, currentTraceparent()) });
      outcome = (await this.answerOf(lane, handle)) as Outcome<LaneCommands[K]['result']>;
    } catch (err) {
      throw fromLaneError(err);
    }
    if (!outcome.ok) throw AsmError.fromBody(outcome.error);
    return outcome.value;
  }

  /**
   * The command's answer. One that has not started within `startWithinMs` (its lane is paused, or
   * backed up) is withdrawn and refused with not_ready, so the request that waits on it is bounded and
   * did nothing; one that started is awaited (its lane's timeout bounds it).
   */
  private async answerOf(lane: string, handle: CommandHandle): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<typeof LATE>((resolve) => (timer = setTimeout(() => resolve(LATE), this.startWithinMs)));
    try {
      const first = await Promise.race([handle.result, late]);
      if (first !== LATE || (await this.engine.cancel(handle.id, 'not started in time')) !== 'pending') return await handle.result;
    } finally {
      clearTimeout(timer);
    }
    handle.result.catch(() => undefined); // rejects with the cancel, answered below
    throw new AsmError('not_ready', `lane ${lane} did not start the command within ${this.startWithinMs} ms (ASM_COMMAND_WAIT_MS): it is paused or backed up; nothing was done, retry later`, {
      details: { lane, waited_ms: this.startWithinMs },
    });
  }

  /** Queue a run's execution on `lane`, in the run's trace; resolves once it is submitted (its outcome is recorded by the run's events). */
  submitRun(lane: string, run: Pick<RunRecord, 'id' | 'session_id' | 'observability'>): Promise<CommandHandle> {
    return this.engine.submit(lane, { type: EXECUTE_RUN, payload: withTrace({ run_id: run.id, session_id: run.session_id }, run.observability.traceparent), id: run.id });
  }

  /**
   * Runs' executions queued again after the store came back from an outage (admission.ts). One whose
   * command failed into the dead-letter queue meanwhile, while its run stayed queued, is revived from
   * there: a submit under its id would only find that failed job and never run (found by
   * test/faults/redis-aof-restart.test.ts). Any other joins its job if Redis still has it, or is stored again.
   */
  async resubmitRuns(runs: Array<Pick<RunRecord, 'id' | 'session_id' | 'queue' | 'observability'>>): Promise<CommandHandle[]> {
    if (runs.length === 0) return [];
    const dead = new Set((await this.engine.deadLetters()).map((letter) => letter.commandId));
    const handles: CommandHandle[] = [];
    for (const run of runs) handles.push(dead.has(run.id) ? await this.engine.retryDeadLetter(run.id) : await this.submitRun(run.queue, run));
    return handles;
  }
}

/** The payload with the trace it belongs to, when something is traced. */
function withTrace<P extends object>(payload: P, traceparent: string | undefined): P {
  return traceparent ? { ...payload, traceparent } : payload;
}

/** A command's span, in the trace its submitter was in (the `traceparent` its payload carries across processes). */
function traced(handler: (payload: unknown, ctx: CommandContext) => Promise<unknown>) {
  return (payload: unknown, ctx: CommandContext): Promise<unknown> =>
    inSpan(`lane ${ctx.type}`, contextOf((payload as { traceparent?: unknown } | null)?.traceparent), { 'asm.lane': ctx.lane, 'asm.command.attempt': ctx.attempt }, () =>
      handler(payload, ctx),
    );
}

function answering(handler: (payload: unknown, ctx: CommandContext) => Promise<unknown>) {
  return async (payload: unknown, ctx: CommandContext): Promise<Outcome<unknown>> => {
    try {
      return { ok: true, value: await handler(payload, ctx) };
    } catch (err) {
      return { ok: false, error: AsmError.from(err).toBody() };
    }
  };
}

/**
 * Whether `err` is `CommandBus.call`'s refusal of a command its lane did not start in time (a paused or
 * backed-up lane), as opposed to the store's outage, which is also not_ready (sweeps.ts tells them apart).
 */
export function isUnstartedCommand(err: unknown): boolean {
  return err instanceof AsmError && err.kind === 'not_ready' && err.details?.waited_ms !== undefined;
}
