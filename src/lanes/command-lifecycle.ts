import { performance } from 'node:perf_hooks';
import type { Command } from './command.js';
import { CommandIndex } from './command-index.js';
import { CommandState } from './command-state.js';
import type { DeadLetterQueue } from './dead-letters.js';
import { errorMessage, laneErrors, noop } from './errors.js';
import { LaneEventBus } from './event-bus.js';
import type { LaneState } from './lane-state.js';
import { retryDelayMs } from './policies.js';
import type { LaneError } from './types.js';

interface DrainWaiter {
  resolve: () => void;
  timer: NodeJS.Timeout;
}

/**
 * Every move a command makes between states (queued, granted a slot, completed, retried, failed,
 * cancelled, settled), each with the slot counts, lane counters, events, dead letter and drain
 * wake-up it implies, so that no caller can do one without the others. It does not decide when a
 * command runs: the scheduler (scheduler-core.ts) does, and `wake` asks it for a dispatch pass
 * whenever a move frees a slot or adds work.
 */
export class CommandLifecycle {
  /** Pending, active and delayed commands by id: for cancel and idempotent submits. */
  readonly live = new CommandIndex();
  readonly events = new LaneEventBus();
  /** Slots held across all lanes. */
  globalActive = 0;
  /** Commands not yet settled (pending, active or delayed): drain waits for 0. */
  private outstanding = 0;
  private readonly drainWaiters = new Set<DrainWaiter>();

  constructor(
    /** Whether terminal failures are dead-lettered (counted and announced) at all. */
    private readonly deadLettering: boolean,
    /** Where they are kept; undefined when the store keeps them itself. */
    private readonly dlq: DeadLetterQueue | undefined,
    /** Added to a positive retry delay before the retry rejoins its lane. */
    private readonly requeueSlackMs: number,
    private readonly wake: () => void,
  ) {}

  /** Registers a new command under its id; `callerChosenId` makes the id findable by name. */
  register(command: Command, callerChosenId: boolean): void {
    this.live.add(command, callerChosenId);
    this.outstanding++;
  }

  /**
   * Registers a command another process submitted, taking over the slot `granted` holds in the same
   * lane (`granted` goes back to the head of its queue unless it is done with). Registered under its
   * id, so that cancel() and a local submit of the same id find it.
   */
  adopt(command: Command): void {
    this.register(command, true);
    command.state = CommandState.Active;
  }

  enqueue(command: Command): void {
    const lane = command.lane;
    lane.push(command);
    const threshold = lane.config.pressureThreshold;
    if (threshold !== undefined && !lane.pressured && lane.pending >= threshold) {
      lane.pressured = true;
      this.events.emit('queue.lane.pressure', { lane_id: lane.id });
    }
  }

  /** Takes the lane's head command and counts its slot. */
  grant(lane: LaneState<Command>): Command {
    const command = lane.take();
    this.afterPendingDrop(lane);
    lane.bucket?.take();
    lane.active++;
    this.globalActive++;
    command.state = CommandState.Active;
    return command;
  }

  /** A granted command goes back to the head of its lane, keeping the slot for whatever runs in it. */
  returnGrant(command: Command): void {
    command.state = CommandState.Pending;
    command.lane.pushFront(command);
  }

  /** Gives a granted slot back without running anything in it. */
  releaseSlot(lane: LaneState<Command>): void {
    lane.active--;
    this.globalActive--;
  }

  /** Releases the slot of the running attempt. */
  endExecution(command: Command): void {
    clearTimeout(command.timer);
    command.timer = undefined;
    command.run = undefined;
    command.lane.active--;
    this.globalActive--;
  }

  /**
   * Whether a failed attempt is retried: the policy allows another, nobody cancelled it, and the
   * handler did not say its error is permanent (`retryable: false` on the error, as BullMQ's
   * UnrecoverableError): the caller knows when doing it again cannot help or must not happen.
   */
  retrying(command: Command, error: unknown): boolean {
    const policy = command.lane.config.retry;
    const permanent = typeof error === 'object' && error !== null && (error as { retryable?: unknown }).retryable === false;
    return policy !== undefined && command.executions <= policy.maxRetries && !command.cancelRequested && !permanent;
  }

  /** The attempt succeeded: release its slot and settle the command. */
  completed(command: Command, value: unknown): void {
    const lane = command.lane;
    this.endExecution(command);
    lane.counts.completed++;
    if (this.events.listening) {
      this.events.emit('queue.command.completed', {
        lane_id: lane.id,
        command_id: command.id,
        command_type: command.type,
        attempt: command.executions,
      });
    }
    this.settle(command);
    command.resolve(value);
    this.wake();
  }

  /** The attempt failed: release its slot, then retry or fail the command. */
  failedAttempt(command: Command, error: unknown, timedOut: boolean, retrying: boolean): void {
    this.endExecution(command);
    if (retrying) this.scheduleRetry(command, retryDelayMs(command.lane.config.retry!, command.executions), error);
    else this.fail(command, error, timedOut);
    this.wake();
  }

  private scheduleRetry(command: Command, delayMs: number, error: unknown): void {
    const lane = command.lane;
    lane.counts.retried++;
    if (this.events.listening) {
      this.events.emit('queue.command.retry', {
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
    command.timer = setTimeout(this.requeue, delayMs === 0 ? 0 : delayMs + this.requeueSlackMs, command);
  }

  /** A retry goes to the tail of its lane, keeping its submit time for the boost. */
  private readonly requeue = (command: Command): void => {
    if (command.state !== CommandState.Delayed) return;
    command.timer = undefined;
    command.lane.delayed--;
    command.state = CommandState.Pending;
    command.requeuedAt = performance.now();
    this.enqueue(command);
    this.wake();
  };

  /** Terminal failure, in a3s-lane's order: DLQ record, dead_lettered, failed or timeout, then the result. */
  private fail(command: Command, error: unknown, timedOut: boolean): void {
    const lane = command.lane;
    const message = errorMessage(error);
    if (timedOut) lane.counts.timeout++;
    else lane.counts.failed++;
    if (this.deadLettering) {
      this.dlq?.record({
        commandId: command.id,
        commandType: command.type,
        laneId: lane.id,
        payload: command.payload,
        error: message,
        attempts: command.executions,
        failedAt: Date.now(),
      });
      lane.counts.deadLettered++;
      if (this.events.listening) {
        this.events.emit('queue.command.dead_lettered', { lane_id: lane.id, command_id: command.id, command_type: command.type });
      }
    }
    if (this.events.listening) {
      this.events.emit(timedOut ? 'queue.command.timeout' : 'queue.command.failed', {
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
  detach(command: Command): void {
    const lane = command.lane;
    if (command.state === CommandState.Pending) {
      lane.unqueue(command);
      this.afterPendingDrop(lane);
    } else if (command.state === CommandState.Delayed) {
      clearTimeout(command.timer);
      command.timer = undefined;
      lane.delayed--;
    }
  }

  /** Removes a pending or delayed command and rejects its result; the caller has released any slot. */
  discard(command: Command, error: LaneError): void {
    const lane = command.lane;
    this.detach(command);
    lane.counts.cancelled++;
    if (this.events.listening) {
      this.events.emit('queue.command.cancelled', {
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
  settleElsewhere(command: Command, outcome: { value: unknown } | { error: unknown }): void {
    this.detach(command);
    this.settle(command);
    if ('value' in outcome) command.resolve(outcome.value);
    else this.rejectResult(command, outcome.error);
  }

  /** Forgets a command without settling its result: nobody here awaits it (see `adopt`). */
  forget(command: Command): void {
    this.detach(command);
    this.settle(command);
  }

  /** The command will never run again: forget it, and wake drain() if it was the last one. */
  settle(command: Command): void {
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

  /** Resolves once every command has settled; rejects `drain_timeout` after `timeoutMs`. */
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

  /** Hysteresis: a pressured lane turns idle only once its queue is empty. */
  private afterPendingDrop(lane: LaneState<Command>): void {
    if (lane.pressured && lane.pending === 0) {
      lane.pressured = false;
      this.events.emit('queue.lane.idle', { lane_id: lane.id });
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
}
