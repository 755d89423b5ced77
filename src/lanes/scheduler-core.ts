import { performance } from 'node:perf_hooks';
import { Command, Execution } from './command.js';
import { CommandState } from './command-state.js';
import { CommandIndex } from './command-index.js';
import { errorMessage, laneErrors } from './errors.js';
import { LaneState } from './lane-state.js';
import { retryDelayMs, validateEngineOptions } from './policies.js';
import type {
  CommandHandle,
  CommandHandler,
  CommandSpec,
  DeadLetter,
  EngineOptions,
  LaneConfig,
  LaneEngine,
  LaneEvent,
  LaneEventKey,
  LaneEventListener,
  LaneMetrics,
} from './types.js';
import { LaneError } from './types.js';

interface Subscriber {
  listener: LaneEventListener;
  filter: ((event: LaneEvent) => boolean) | undefined;
}

interface DrainWaiter {
  resolve: () => void;
  timer: NodeJS.Timeout;
}

export const noop = () => {};

/**
 * Everything a lane engine decides without knowing where its commands live: a3s-lane's scheduler
 * (lane.md §2) with its defects fixed (§8). The in-process and BullMQ engines extend it and differ
 * only in the hooks below, so that both are held to one scheduling rule by construction, not by
 * keeping two copies in step.
 *
 * Dispatch is event-driven. Every event that can free a slot or add eligible work (submit,
 * completion, resume, a retry re-queued, a rate-limit token coming due) runs a dispatch pass, and
 * a pass grants slots until nothing more can start; each grant goes to `launch`.
 *
 * Choosing the next command: among lanes that have pending work, are not paused, are below their
 * maxConcurrency and hold a rate-limit token, the one with the lowest effective priority (base
 * priority lowered by its boost) wins, ties going to the lane registered first; its oldest pending
 * command starts. The global cap and minConcurrency add one rule:
 *
 *   A lane below its minConcurrency may start a command whenever a global slot is free. A lane at
 *   or above its minConcurrency may start one only if the free global slots exceed the slots still
 *   reserved for the other lanes that are waiting (ready to start work now): Σ (min − active) over
 *   those lanes.
 *
 * So a lane's reserved slots are held only while it has work to put in them (idle, paused or
 * rate-limited lanes lend theirs out), and a busy higher lane cannot take the last free slot from a
 * lower lane that is waiting below its minimum. Running commands are never preempted: a lane that
 * gets work after lending its slots out waits for the next one to free up, which then goes to it.
 * Without a global cap, minConcurrency has no effect.
 *
 * Hooks return `undefined` rather than a resolved promise when they have nothing to wait for, so
 * that the in-process engine's submit/cancel/pause pay no extra microtask turn.
 */
export abstract class LaneSchedulerCore implements LaneEngine {
  protected readonly laneList: LaneState<Command>[];
  protected readonly laneById = new Map<string, LaneState<Command>>();
  private readonly configs: LaneConfig[];
  private readonly handlers = new Map<string, CommandHandler>();
  /** Pending, active and delayed commands by id: for cancel and idempotent submits. */
  protected readonly live = new CommandIndex();
  /** Insertion-ordered, so the first key is the oldest letter. */
  private readonly dlq = new Map<string, DeadLetter>();
  private readonly dlqSize: number;
  private readonly globalCap: number;
  /** Reservations only matter under a global cap, and cost a second scan of the lanes per dispatch. */
  private readonly reserves: boolean;
  /** Only boosts and rate limits read the clock while choosing a lane. */
  private readonly clockedChoice: boolean;
  private readonly rateLimited: boolean;
  /** Grants per pass before yielding to the event loop; see `dispatchPass`. */
  private readonly burst: number;

  private subscribers: Subscriber[] = [];
  protected started = false;
  private shuttingDown = false;
  protected closed = false;
  protected globalActive = 0;
  /** Commands not yet settled (pending, active or delayed): drain waits for 0. */
  private outstanding = 0;
  private readonly drainWaiters = new Set<DrainWaiter>();

  /**
   * False in the in-process engine's tick mode, where a timer owns dispatching and events must not
   * start work (a3s-lane parity).
   */
  protected eventDriven = true;
  private dispatching = false;
  private yieldHandle: NodeJS.Immediate | undefined;
  private tokenTimer: NodeJS.Timeout | undefined;
  private tokenTimerAt = Infinity;

  constructor(options: EngineOptions, burst: number) {
    validateEngineOptions(options);
    const now = performance.now();
    this.configs = options.lanes.map((config) => structuredClone(config));
    this.laneList = this.configs.map((config) => new LaneState(config, now));
    for (const lane of this.laneList) this.laneById.set(lane.id, lane);
    this.dlqSize = options.dlqSize ?? 0;
    this.globalCap = options.globalConcurrency ?? Infinity;
    this.reserves = options.globalConcurrency !== undefined && this.laneList.some((lane) => lane.min > 0);
    this.rateLimited = this.laneList.some((lane) => lane.bucket !== undefined);
    this.clockedChoice = this.rateLimited || this.laneList.some((lane) => lane.boost !== undefined);
    this.burst = burst;
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
  /** Called by start(); tick mode replaces it with its timer. */
  protected onStart(): void {
    this.dispatch();
  }
  /** Where a terminal failure is kept when the DLQ is enabled: by default the engine's bounded map. */
  protected recordDeadLetter(letter: DeadLetter): void {
    this.dlq.delete(letter.commandId); // a reused id moves to the newest position
    if (this.dlq.size >= this.dlqSize) this.dlq.delete(this.dlq.keys().next().value!);
    this.dlq.set(letter.commandId, letter);
  }
  /** Engine-specific timers to clear as close() begins. */
  protected stopTimers(): void {}
  /** Engine-specific teardown after every command has been rejected. */
  protected afterClose(): Promise<void> | undefined {
    return undefined;
  }
  /** When a retry rejoins its lane, given the policy's delay. */
  protected requeueDelayMs(delayMs: number): number {
    return delayMs;
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
    this.onStart();
  }

  async submit(laneId: string, spec: CommandSpec): Promise<CommandHandle> {
    if (this.shuttingDown) throw laneErrors.shuttingDown();
    const lane = this.laneById.get(laneId);
    if (lane === undefined) throw laneErrors.laneNotFound(laneId);
    const handler = this.handlers.get(spec.type);
    if (handler === undefined) throw laneErrors.unknownCommandType(spec.type);
    if (spec.id !== undefined) {
      // The id is an idempotency key: a second submit while the first is unsettled joins it.
      const existing = this.live.get(spec.id);
      if (existing !== undefined) return { id: existing.id, result: existing.result };
    }
    const maxPending = lane.config.maxPending;
    if (maxPending !== undefined && lane.pending >= maxPending) throw laneErrors.queueFull(laneId, maxPending);

    const slot = this.live.claimSlot();
    const id = spec.id ?? this.live.generateId(slot);
    const command = new Command(slot, id, spec.type, spec.payload, lane, handler, performance.now());
    // Registered before any store write, so that a concurrent submit with this id joins it.
    this.live.add(command, spec.id !== undefined);
    this.outstanding++;
    const stored = this.persist(command);
    if (stored !== undefined) {
      try {
        await stored;
      } catch (error) {
        this.settle(command);
        throw error;
      }
      if (command.state === CommandState.Done) return { id, result: command.result }; // closed meanwhile
    }
    lane.counts.submitted++;
    if (this.subscribers.length !== 0) {
      this.emit('queue.command.submitted', { lane_id: lane.id, command_id: id, command_type: command.type });
    }
    this.enqueue(command);
    this.dispatch();
    return { id, result: command.result };
  }

  async cancel(commandId: string, reason?: string): Promise<'pending' | 'active' | 'unknown'> {
    const command = this.live.get(commandId);
    if (command === undefined) return 'unknown';
    const error = laneErrors.cancelled(reason);
    if (command.state === CommandState.Active) {
      command.cancelRequested = true;
      // No run yet while a store is still fetching the command; the launch sees cancelRequested.
      command.run?.abort(error);
      return 'active';
    }
    // A command waiting out a retry delay is not running, so it is cancelled like a pending one.
    this.discard(command, error);
    const removed = this.unstore(command);
    if (removed !== undefined) await removed;
    return 'pending';
  }

  subscribe(listener: LaneEventListener, filter?: (event: LaneEvent) => boolean): () => void {
    const subscriber: Subscriber = { listener, filter };
    // Copy on write: an emit in progress keeps iterating the array it started with.
    this.subscribers = [...this.subscribers, subscriber];
    return () => {
      this.subscribers = this.subscribers.filter((s) => s !== subscriber);
    };
  }

  lanes(): LaneConfig[] {
    return this.configs.map((config) => structuredClone(config));
  }

  async metrics(): Promise<LaneMetrics[]> {
    return this.laneList.map((lane) => lane.metrics());
  }

  /** Pause is a decision of this engine's gate; for the BullMQ engine it is per node (README). */
  async pause(laneId: string): Promise<void> {
    this.lane(laneId).paused = true;
  }

  async resume(laneId: string): Promise<void> {
    this.lane(laneId).paused = false;
    this.dispatch();
  }

  async deadLetters(): Promise<DeadLetter[]> {
    return [...this.dlq.values()];
  }

  async retryDeadLetter(commandId: string): Promise<CommandHandle> {
    const letter = this.dlq.get(commandId);
    if (letter === undefined) throw laneErrors.deadLetterNotFound(commandId);
    // Submit first, so that a refused submit (shutdown, queue full) leaves the letter in place.
    const handle = await this.submit(letter.laneId, { type: letter.commandType, payload: letter.payload, id: letter.commandId });
    this.dlq.delete(commandId);
    return handle;
  }

  async deleteDeadLetter(commandId: string): Promise<boolean> {
    return this.dlq.delete(commandId);
  }

  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.emit('queue.shutdown.started', null);
  }

  drain(timeoutMs: number): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: DrainWaiter = {
        resolve,
        timer: setTimeout(() => {
          this.drainWaiters.delete(waiter);
          reject(laneErrors.drainTimeout(timeoutMs));
        }, timeoutMs),
      };
      this.drainWaiters.add(waiter);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.shutdown();
    this.closed = true;
    clearTimeout(this.tokenTimer);
    if (this.yieldHandle !== undefined) clearImmediate(this.yieldHandle);
    this.stopTimers();
    const error = laneErrors.cancelled('engine closed');
    for (const command of this.live.all()) {
      if (command.state === CommandState.Done) continue;
      if (command.state === CommandState.Active) {
        // The handler may ignore its signal; its eventual outcome is stale and dropped.
        command.run?.abort(error);
        this.endExecution(command);
        this.abandon(command, error);
        this.discard(command, error);
      } else {
        this.discard(command, error);
        void this.unstore(command);
      }
    }
    this.emit('queue.shutdown.complete', null);
    this.subscribers = [];
    const closing = this.afterClose();
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
        const lane = this.chooseLane();
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
        const command = this.grant(lane);
        if (command !== undefined) this.launch(command);
      }
      if (this.rateLimited && this.eventDriven) this.armTokenTimer();
    } finally {
      this.dispatching = false;
    }
  }

  /** The lane whose head command should start now, or undefined. See the class comment for the rule. */
  private chooseLane(): LaneState<Command> | undefined {
    const free = this.globalCap - this.globalActive;
    if (free <= 0) return undefined;
    const now = this.clockedChoice ? performance.now() : 0;
    let reserved = 0;
    if (this.reserves) {
      for (const lane of this.laneList) if (lane.ready(now)) reserved += lane.unusedReservation();
    }
    let best: LaneState<Command> | undefined;
    let bestPriority = Infinity;
    for (const lane of this.laneList) {
      if (!lane.ready(now)) continue;
      // Above its own minimum, a lane may only use slots nobody else has reserved.
      if (this.reserves && lane.active >= lane.min && free <= reserved) continue;
      const priority = lane.effectivePriority(now);
      if (priority < bestPriority) {
        best = lane;
        bestPriority = priority;
      }
    }
    return best;
  }

  /**
   * Rate-limited lanes wait for a token without polling: one timer, armed for the earliest moment a
   * lane that is otherwise ready to start gets its next token.
   */
  private armTokenTimer(): void {
    if (this.globalActive >= this.globalCap) return; // a completion will run the next pass
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

  /** Takes the lane's head command and counts its slot. */
  private grant(lane: LaneState<Command>): Command | undefined {
    const command = lane.take();
    this.afterPendingDrop(lane);
    if (command === undefined) return undefined;
    lane.bucket?.take();
    lane.active++;
    this.globalActive++;
    command.state = CommandState.Active;
    return command;
  }

  /** Starts an attempt of a granted command: its Execution, wait time, event and timeout. */
  protected begin(command: Command): Execution {
    const lane = command.lane;
    command.executions++;
    const now = performance.now();
    const run = new Execution(command.id, lane.id, command.type, command.executions, now);
    command.run = run;
    lane.wait.record(now - (command.requeuedAt ?? command.submittedAt));
    if (this.subscribers.length !== 0) {
      this.emit('queue.command.started', {
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

  // ---- outcomes -------------------------------------------------------------------------------

  private readonly onTimeout = (command: Command, run: Execution, timeoutMs: number): void => {
    if (command.run !== run) return;
    const error = laneErrors.timeout(timeoutMs);
    run.abort(error);
    void this.onFailure(command, run, error, true);
  };

  /** Whether a failed attempt is retried: the policy allows another and nobody cancelled it. */
  protected retrying(command: Command): boolean {
    const policy = command.lane.config.retry;
    return policy !== undefined && command.executions <= policy.maxRetries && !command.cancelRequested;
  }

  /** The attempt succeeded: release its slot and settle the command. */
  protected completed(command: Command, value: unknown): void {
    const lane = command.lane;
    this.endExecution(command);
    lane.counts.completed++;
    if (this.subscribers.length !== 0) {
      this.emit('queue.command.completed', {
        lane_id: lane.id,
        command_id: command.id,
        command_type: command.type,
        attempt: command.executions,
      });
    }
    this.settle(command);
    command.resolve(value);
    this.dispatch();
  }

  /** The attempt failed: release its slot, then retry or fail the command. */
  protected failedAttempt(command: Command, error: unknown, timedOut: boolean, retrying: boolean): void {
    this.endExecution(command);
    if (retrying) this.scheduleRetry(command, retryDelayMs(command.lane.config.retry!, command.executions), error);
    else this.fail(command, error, timedOut);
    this.dispatch();
  }

  private scheduleRetry(command: Command, delayMs: number, error: unknown): void {
    const lane = command.lane;
    lane.counts.retried++;
    if (this.subscribers.length !== 0) {
      this.emit('queue.command.retry', {
        lane_id: lane.id,
        command_id: command.id,
        command_type: command.type,
        attempt: command.executions,
        delay_ms: delayMs,
        error: errorMessage(error),
      });
    }
    command.state = CommandState.Delayed;
    lane.delayed++;
    command.timer = setTimeout(this.requeue, this.requeueDelayMs(delayMs), command);
  }

  /** A retry goes to the tail of its lane, keeping its submit time for the boost. */
  private readonly requeue = (command: Command): void => {
    if (command.state !== CommandState.Delayed) return;
    command.timer = undefined;
    command.lane.delayed--;
    command.state = CommandState.Pending;
    command.requeuedAt = performance.now();
    this.enqueue(command);
    this.dispatch();
  };

  /** Terminal failure, in a3s-lane's order: DLQ record, dead_lettered, failed or timeout, then the result. */
  private fail(command: Command, error: unknown, timedOut: boolean): void {
    const lane = command.lane;
    const message = errorMessage(error);
    if (timedOut) lane.counts.timeout++;
    else lane.counts.failed++;
    if (this.dlqSize > 0) {
      this.recordDeadLetter({
        commandId: command.id,
        commandType: command.type,
        laneId: lane.id,
        payload: command.payload,
        error: message,
        attempts: command.executions,
        failedAt: Date.now(),
      });
      lane.counts.deadLettered++;
      if (this.subscribers.length !== 0) {
        this.emit('queue.command.dead_lettered', { lane_id: lane.id, command_id: command.id, command_type: command.type });
      }
    }
    if (this.subscribers.length !== 0) {
      this.emit(timedOut ? 'queue.command.timeout' : 'queue.command.failed', {
        lane_id: lane.id,
        command_id: command.id,
        command_type: command.type,
        attempt: command.executions,
        error: message,
      });
    }
    this.settle(command);
    this.rejectResult(command, error);
  }

  /** Takes a pending or delayed command out of its lane's queue or retry timer; it holds no slot. */
  protected detach(command: Command): void {
    const lane = command.lane;
    if (command.state === CommandState.Pending) {
      lane.unqueue();
      this.afterPendingDrop(lane);
    } else if (command.state === CommandState.Delayed) {
      clearTimeout(command.timer);
      command.timer = undefined;
      lane.delayed--;
    }
  }

  /** Removes a pending or delayed command and rejects its result; the caller has released any slot. */
  protected discard(command: Command, error: LaneError): void {
    const lane = command.lane;
    this.detach(command);
    lane.counts.cancelled++;
    if (this.subscribers.length !== 0) {
      this.emit('queue.command.cancelled', {
        lane_id: lane.id,
        command_id: command.id,
        command_type: command.type,
        reason: error.message,
      });
    }
    this.settle(command);
    this.rejectResult(command, error);
  }

  /** Settles a command that another process ran: it holds no slot here, and this engine counts nothing for it. */
  protected settleElsewhere(command: Command, outcome: { value: unknown } | { error: unknown }): void {
    this.detach(command);
    this.settle(command);
    if ('value' in outcome) command.resolve(outcome.value);
    else this.rejectResult(command, outcome.error);
  }

  /** Forgets a command without settling its result: nobody here awaits it (see `adopt`). */
  protected forget(command: Command): void {
    this.detach(command);
    this.settle(command);
  }

  /**
   * Registers a command another process submitted, taking over the slot `granted` holds in the same
   * lane (`granted` goes back to the head of its queue unless it is done with). Registered under its
   * id, so that cancel() and a local submit of the same id find it.
   */
  protected adopt(command: Command): void {
    this.live.add(command, true);
    this.outstanding++;
    command.state = CommandState.Active;
  }

  /** A granted command goes back to the head of its lane, keeping the slot for whatever runs in it. */
  protected returnGrant(command: Command): void {
    command.state = CommandState.Pending;
    command.lane.pushFront(command);
  }

  /** Gives a granted slot back without running anything in it. */
  protected releaseSlot(lane: LaneState<Command>): void {
    lane.active--;
    this.globalActive--;
  }

  // ---- bookkeeping ----------------------------------------------------------------------------

  protected enqueue(command: Command): void {
    const lane = command.lane;
    lane.push(command);
    const threshold = lane.config.pressureThreshold;
    if (threshold !== undefined && !lane.pressured && lane.pending >= threshold) {
      lane.pressured = true;
      this.emit('queue.lane.pressure', { lane_id: lane.id });
    }
  }

  /** Hysteresis: a pressured lane turns idle only once its queue is empty. */
  private afterPendingDrop(lane: LaneState<Command>): void {
    if (lane.pressured && lane.pending === 0) {
      lane.pressured = false;
      this.emit('queue.lane.idle', { lane_id: lane.id });
    }
  }

  /** Releases the slot of the running attempt. */
  protected endExecution(command: Command): void {
    clearTimeout(command.timer);
    command.timer = undefined;
    command.run = undefined;
    command.lane.active--;
    this.globalActive--;
  }

  /** The command will never run again: forget it, and wake drain() if it was the last one. */
  protected settle(command: Command): void {
    // A store write can outlast close(), which has settled the command already.
    if (command.state === CommandState.Done) return;
    command.state = CommandState.Done;
    this.live.remove(command);
    if (--this.outstanding === 0 && this.drainWaiters.size !== 0) {
      for (const waiter of this.drainWaiters) {
        clearTimeout(waiter.timer);
        waiter.resolve();
      }
      this.drainWaiters.clear();
    }
  }

  /**
   * Failures are reported through events, metrics and the DLQ as well, so a caller may ignore the
   * result promise; mark it handled so that such a failure does not crash the process as an
   * unhandled rejection. Callers that await it still get the error.
   */
  private rejectResult(command: Command, error: unknown): void {
    command.result.catch(noop);
    command.reject(error);
  }

  private emit(key: LaneEventKey, payload: Record<string, unknown> | null): void {
    const subscribers = this.subscribers;
    if (subscribers.length === 0) return;
    const event: LaneEvent = { key, payload, timestamp: Date.now() };
    for (const { listener, filter } of subscribers) {
      // A throwing listener must not break dispatch or starve the listeners after it.
      try {
        if (filter === undefined || filter(event)) listener(event);
      } catch {
        // Listeners are observers; their failures are theirs to report.
      }
    }
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}
