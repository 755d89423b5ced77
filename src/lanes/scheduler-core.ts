import { performance } from 'node:perf_hooks';
import { Command, Execution } from './command.js';
import { CommandLifecycle } from './command-lifecycle.js';
import { CommandState } from './command-state.js';
import { DeadLetterQueue } from './dead-letters.js';
import { laneErrors } from './errors.js';
import { chooseLane, hasReservations, readsClock } from './lane-choice.js';
import { LaneState } from './lane-state.js';
import { validateEngineOptions } from './policies.js';
import type {
  CommandHandle,
  CommandHandler,
  CommandSpec,
  DeadLetter,
  EngineOptions,
  LaneConfig,
  LaneEngine,
  LaneError,
  LaneEvent,
  LaneEventListener,
  LaneMetrics,
} from './types.js';

/** How an engine's store shapes the scheduler, given as values rather than hooks. */
export interface SchedulerTraits {
  /** Grants per dispatch pass before yielding to the event loop (see `dispatchPass`). */
  burst: number;
  /** Added to a positive retry delay before the retry rejoins its lane, so the store's own delay has passed. */
  requeueSlackMs: number;
  /** Whether terminal failures go to the core's in-memory DLQ; false when the store keeps them itself. */
  keepsDeadLetters: boolean;
}

/**
 * Everything a lane engine decides without knowing where its commands live: a3s-lane's scheduler
 * with its defects fixed (src/lanes/README.md). The in-process and BullMQ engines extend it and
 * differ only in the hooks below and their `SchedulerTraits`, so that both are held to one
 * scheduling rule by construction, not by keeping two copies in step.
 *
 * Dispatch is event-driven. Every event that can free a slot or add eligible work (submit,
 * completion, resume, a retry re-queued, a rate-limit token coming due) runs a dispatch pass, and
 * a pass grants slots until nothing more can start; each grant goes to `launch`. Which lane gets a
 * slot is `chooseLane` (lane-choice.ts), which states the rule; what each move of a command implies
 * is `CommandLifecycle` (command-lifecycle.ts), which engines reach through `commands`.
 *
 * Hooks return `undefined` rather than a resolved promise when they have nothing to wait for, so
 * that the in-process engine's submit/cancel/pause pay no extra microtask turn.
 */
export abstract class LaneSchedulerCore implements LaneEngine {
  protected readonly laneList: LaneState<Command>[];
  protected readonly laneById = new Map<string, LaneState<Command>>();
  protected readonly commands: CommandLifecycle;
  private readonly configs: LaneConfig[];
  private readonly handlers = new Map<string, CommandHandler>();
  /** Undefined when the DLQ is disabled or the store keeps dead letters itself. */
  private readonly dlq: DeadLetterQueue | undefined;
  private readonly globalCap: number;
  private readonly reserves: boolean;
  private readonly clockedChoice: boolean;
  private readonly rateLimited: boolean;
  private readonly burst: number;

  protected started = false;
  private shuttingDown = false;
  protected closed = false;

  /**
   * False in the in-process engine's tick mode, where a timer owns dispatching and events must not
   * start work (a3s-lane parity).
   */
  protected eventDriven = true;
  private dispatching = false;
  private yieldHandle: NodeJS.Immediate | undefined;
  private tokenTimer: NodeJS.Timeout | undefined;
  private tokenTimerAt = Infinity;

  constructor(options: EngineOptions, traits: SchedulerTraits) {
    validateEngineOptions(options);
    const now = performance.now();
    this.configs = options.lanes.map((config) => structuredClone(config));
    this.laneList = this.configs.map((config) => new LaneState(config, now));
    for (const lane of this.laneList) this.laneById.set(lane.id, lane);
    const dlqSize = options.dlqSize ?? 0;
    this.dlq = traits.keepsDeadLetters && dlqSize > 0 ? new DeadLetterQueue(dlqSize) : undefined;
    this.commands = new CommandLifecycle(dlqSize > 0, this.dlq, traits.requeueSlackMs, () => this.dispatch());
    this.globalCap = options.globalConcurrency ?? Infinity;
    this.reserves = hasReservations(this.laneList, this.globalCap);
    this.clockedChoice = readsClock(this.laneList);
    this.rateLimited = this.laneList.some((lane) => lane.bucket !== undefined);
    this.burst = traits.burst;
  }

  // ---- hooks ----------------------------------------------------------------------------------

  /** Runs a command the scheduler has granted a slot (state Active, slot counted). */
  protected abstract launch(command: Command): void;
  /** The handler of `run` returned `value`; stale runs must be ignored. */
  protected abstract onSuccess(command: Command, run: Execution, value: unknown): void | Promise<void>;
  /** The handler of `run` threw, rejected or timed out; stale runs must be ignored. */
  protected abstract onFailure(command: Command, run: Execution, error: unknown, timedOut: boolean): void | Promise<void>;

  /** Stores a new command before it is queued; a rejection refuses the submit. */
  protected persist(_command: Command): Promise<unknown> | undefined {
    return undefined;
  }
  /** A pending or delayed command was cancelled or closed. */
  protected unstore(_command: Command): Promise<void> | undefined {
    return undefined;
  }
  /** close() released the slot of a running (or still fetching) command. */
  protected abandon(_command: Command, _error: LaneError): void {}
  /** Stops the engine's own timers and releases its resources, once close() has rejected every command. */
  protected teardown(): Promise<void> | undefined {
    return undefined;
  }

  // ---- LaneEngine -----------------------------------------------------------------------------

  register(type: string, handler: CommandHandler): void {
    this.handlers.set(type, handler);
  }

  protected handlerFor(type: string): CommandHandler | undefined {
    return this.handlers.get(type);
  }

  async start(): Promise<void> {
    if (this.started || this.closed) return;
    this.started = true;
    this.dispatch();
  }

  async submit(laneId: string, spec: CommandSpec): Promise<CommandHandle> {
    if (this.shuttingDown) throw laneErrors.shuttingDown();
    const lane = this.laneById.get(laneId);
    if (lane === undefined) throw laneErrors.laneNotFound(laneId);
    const handler = this.handlers.get(spec.type);
    if (handler === undefined) throw laneErrors.unknownCommandType(spec.type);
    const commands = this.commands;
    if (spec.id !== undefined) {
      // The id is an idempotency key: a second submit while the first is unsettled joins it.
      const existing = commands.live.get(spec.id);
      if (existing !== undefined) return { id: existing.id, result: existing.result };
    }
    const maxPending = lane.config.maxPending;
    if (maxPending !== undefined && lane.pending >= maxPending) throw laneErrors.queueFull(laneId, maxPending);

    const slot = commands.live.claimSlot();
    const id = spec.id ?? commands.live.generateId(slot);
    const command = new Command(slot, id, spec.type, spec.payload, lane, handler, performance.now());
    // Registered before any store write, so that a concurrent submit with this id joins it.
    commands.register(command, spec.id !== undefined);
    const stored = this.persist(command);
    if (stored !== undefined) {
      try {
        await stored;
      } catch (error) {
        commands.settle(command);
        throw error;
      }
      if (command.state === CommandState.Done) return { id, result: command.result }; // closed meanwhile
    }
    lane.counts.submitted++;
    if (commands.events.listening) {
      commands.events.emit('queue.command.submitted', { lane_id: lane.id, command_id: id, command_type: command.type });
    }
    // While its job was being stored, an engine may have taken it already (BullMQ: another engine's,
    // or this one's fetch for another slot); then it is not this lane's to queue.
    if (command.state === CommandState.Pending) commands.enqueue(command);
    this.dispatch();
    return { id, result: command.result };
  }

  async cancel(commandId: string, reason?: string): Promise<'pending' | 'active' | 'unknown'> {
    const command = this.commands.live.get(commandId);
    if (command === undefined) return 'unknown';
    const error = laneErrors.cancelled(reason);
    if (command.state === CommandState.Active) {
      command.cancelRequested = true;
      // No run yet while a store is still fetching the command; the launch sees cancelRequested.
      command.run?.abort(error);
      return 'active';
    }
    // A command waiting out a retry delay is not running, so it is cancelled like a pending one.
    this.commands.discard(command, error);
    const removed = this.unstore(command);
    if (removed !== undefined) await removed;
    return 'pending';
  }

  subscribe(listener: LaneEventListener, filter?: (event: LaneEvent) => boolean): () => void {
    return this.commands.events.subscribe(listener, filter);
  }

  lanes(): LaneConfig[] {
    return this.configs.map((config) => structuredClone(config));
  }

  async metrics(): Promise<LaneMetrics[]> {
    return this.laneList.map((lane) => lane.metrics());
  }

  /** Pause is a decision of this engine's gate; for the BullMQ engine it is per node (src/lanes/README.md). */
  async pause(laneId: string): Promise<void> {
    this.lane(laneId).paused = true;
  }

  async resume(laneId: string): Promise<void> {
    this.lane(laneId).paused = false;
    this.dispatch();
  }

  async deadLetters(): Promise<DeadLetter[]> {
    return this.dlq?.list() ?? [];
  }

  async retryDeadLetter(commandId: string): Promise<CommandHandle> {
    const letter = this.dlq?.get(commandId);
    if (letter === undefined) throw laneErrors.deadLetterNotFound(commandId);
    // Submit first, so that a refused submit (shutdown, queue full) leaves the letter in place.
    const handle = await this.submit(letter.laneId, { type: letter.commandType, payload: letter.payload, id: letter.commandId });
    this.dlq!.delete(commandId);
    return handle;
  }

  async deleteDeadLetter(commandId: string): Promise<boolean> {
    return this.dlq?.delete(commandId) ?? false;
  }

  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.commands.events.emit('queue.shutdown.started', null);
  }

  drain(timeoutMs: number): Promise<void> {
    return this.commands.drain(timeoutMs);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.shutdown();
    this.closed = true;
    clearTimeout(this.tokenTimer);
    if (this.yieldHandle !== undefined) clearImmediate(this.yieldHandle);
    const commands = this.commands;
    const error = laneErrors.cancelled('engine closed');
    for (const command of commands.live.all()) {
      if (command.state === CommandState.Done) continue;
      if (command.state === CommandState.Active) {
        // The handler may ignore its signal; its eventual outcome is stale and dropped.
        command.run?.abort(error);
        commands.endExecution(command);
        this.abandon(command, error);
        commands.discard(command, error);
      } else {
        commands.discard(command, error);
        void this.unstore(command);
      }
    }
    commands.events.emit('queue.shutdown.complete', null);
    commands.events.clear();
    const closing = this.teardown();
    if (closing !== undefined) await closing;
  }

  protected lane(laneId: string): LaneState<Command> {
    const lane = this.laneById.get(laneId);
    if (lane === undefined) throw laneErrors.laneNotFound(laneId);
    return lane;
  }

  // ---- dispatch -------------------------------------------------------------------------------

  /** Runs a dispatch pass now, unless tick mode owns dispatching. */
  protected dispatch(): void {
    if (this.eventDriven) this.dispatchPass(Infinity);
  }

  protected dispatchPass(limit: number): void {
    // A handler that finishes synchronously re-enters through its completion; the running loop
    // will see the freed slot on its next iteration.
    if (this.dispatching || !this.started || this.closed || this.yieldHandle !== undefined) return;
    this.dispatching = true;
    try {
      for (let started = 0; started < limit; started++) {
        const lane = this.nextLane();
        if (lane === undefined) break;
        // With synchronous handlers one pass would otherwise work through the whole backlog and
        // starve timers and I/O for as long as that takes.
        if (started === this.burst) {
          this.yieldHandle = setImmediate(() => {
            this.yieldHandle = undefined;
            this.dispatch();
          });
          return;
        }
        this.launch(this.commands.grant(lane));
      }
      if (this.rateLimited && this.eventDriven) this.armTokenTimer();
    } finally {
      this.dispatching = false;
    }
  }

  /** The lane whose head command should start now, or undefined; the clock is read only when a slot is free. */
  private nextLane(): LaneState<Command> | undefined {
    const free = this.globalCap - this.commands.globalActive;
    if (free <= 0) return undefined;
    return chooseLane(this.laneList, free, this.clockedChoice ? performance.now() : 0, this.reserves);
  }

  /**
   * Rate-limited lanes wait for a token without polling: one timer, armed for the earliest moment a
   * lane that is otherwise ready to start gets its next token.
   */
  private armTokenTimer(): void {
    if (this.commands.globalActive >= this.globalCap) return; // a completion will run the next pass
    const now = performance.now();
    let due = Infinity;
    for (const lane of this.laneList) {
      if (lane.bucket === undefined || lane.pending === 0 || lane.paused || lane.active >= lane.max) continue;
      due = Math.min(due, now + lane.bucket.msUntilToken(now));
    }
    if (due === Infinity || due >= this.tokenTimerAt) return;
    clearTimeout(this.tokenTimer);
    this.tokenTimerAt = due;
    this.tokenTimer = setTimeout(
      () => {
        this.tokenTimer = undefined;
        this.tokenTimerAt = Infinity;
        this.dispatch();
      },
      Math.max(1, Math.ceil(due - now)),
    );
  }

  /** Starts an attempt of a granted command: its Execution, wait time, event and timeout. */
  protected begin(command: Command): Execution {
    const lane = command.lane;
    command.executions++;
    const now = performance.now();
    const retriesLeft = Math.max(0, (lane.config.retry?.maxRetries ?? 0) - (command.executions - 1));
    const run = new Execution(command.id, lane.id, command.type, command.executions, retriesLeft, now);
    command.run = run;
    lane.wait.record(now - (command.requeuedAt ?? command.submittedAt));
    const events = this.commands.events;
    if (events.listening) {
      events.emit('queue.command.started', {
        lane_id: lane.id,
        command_id: command.id,
        command_type: command.type,
        attempt: command.executions,
      });
    }
    const timeoutMs = lane.config.timeoutMs;
    if (timeoutMs !== undefined) command.timer = setTimeout(this.onTimeout, timeoutMs, command, run, timeoutMs);
    return run;
  }

  /** Calls the handler; a synchronous outcome is handled at once, without a promise. */
  protected invoke(command: Command, run: Execution): void {
    let outcome: unknown;
    try {
      outcome = command.handler(command.payload, run);
    } catch (error) {
      void this.onFailure(command, run, error, false);
      return;
    }
    if (isThenable(outcome)) {
      Promise.resolve(outcome).then(
        (value) => this.onSuccess(command, run, value),
        (error) => this.onFailure(command, run, error, false),
      );
    } else {
      void this.onSuccess(command, run, outcome);
    }
  }

  private readonly onTimeout = (command: Command, run: Execution, timeoutMs: number): void => {
    if (command.run !== run) return;
    const error = laneErrors.timeout(timeoutMs);
    run.abort(error);
    void this.onFailure(command, run, error, true);
  };
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}
