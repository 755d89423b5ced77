import { CommandState } from './command-state.js';
import type { LaneState } from './lane-state.js';
import type { CommandContext, CommandHandler } from './types.js';

/** One submitted command, from submit until its result settles, across all of its attempts. */
export class Command {
  state: CommandState = CommandState.Pending;
  /** Whether it holds a live entry in its lane's queue (kept by LaneState). */
  queued = false;
  /** Executions started so far; the current attempt number while active. */
  executions = 0;
  /** The running attempt; a settlement from any other attempt is stale and ignored. */
  run: Execution | undefined = undefined;
  /** The timeout timer while active, the retry timer while delayed. */
  timer: NodeJS.Timeout | undefined = undefined;
  /** Set when a retry re-joins the queue; until then the command has been queued since submit. */
  requeuedAt: number | undefined = undefined;
  /** Set by cancel() on an active command: whatever the handler does next is final, never retried. */
  cancelRequested = false;
  readonly result: Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;

  constructor(
    /** Its place in the engine's CommandIndex. */
    readonly slot: number,
    readonly id: string,
    readonly type: string,
    readonly payload: unknown,
    readonly lane: LaneState<Command>,
    readonly handler: CommandHandler,
    /** Submit time; the priority boost measures its deadline from here, across retries. */
    readonly submittedAt: number,
  ) {
    this.result = new Promise(captureSettlers);
    this.resolve = settlers.resolve;
    this.reject = settlers.reject;
  }
}

/*
 * One shared executor instead of a closure per command: the executor runs synchronously inside the
 * Promise constructor, so the module-level slot is read back before anything else can overwrite it.
 * At a million queued commands every avoided allocation shows up as garbage-collection time.
 */
const settlers = { resolve: undefined as unknown as (value: unknown) => void, reject: undefined as unknown as (error: unknown) => void };
function captureSettlers(resolve: (value: unknown) => void, reject: (error: unknown) => void): void {
  settlers.resolve = resolve;
  settlers.reject = reject;
}

/**
 * One execution of a command, handed to the handler as its context. The AbortController is created
 * only when the handler reads `signal` or the engine aborts, because most commands never need one.
 */
export class Execution implements CommandContext {
  #controller: AbortController | undefined;

  constructor(
    readonly id: string,
    readonly lane: string,
    readonly type: string,
    readonly attempt: number,
    readonly retriesLeft: number,
    readonly startedAt: number,
  ) {}

  get signal(): AbortSignal {
    return (this.#controller ??= new AbortController()).signal;
  }

  abort(reason: unknown): void {
    (this.#controller ??= new AbortController()).abort(reason);
  }
}
