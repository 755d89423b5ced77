import { Histogram } from './histogram.js';
import { Ring } from './ring.js';
import { CommandState } from './command-state.js';
import { effectivePriority } from './policies.js';
import { TokenBucket } from './token-bucket.js';
import type { LaneConfig, LaneMetrics, PriorityBoost } from './types.js';

/** What a lane queues: a Command, of which the lane reads only this much. */
export interface Queued {
  state: CommandState;
  /** Submit time; the priority boost measures its deadline from here, across retries. */
  readonly submittedAt: number;
  /**
   * Set by the lane: it holds a live entry in the lane's queue. A pending command need not: the
   * BullMQ engine registers a command before its job is stored and queues it only after.
   */
  queued?: boolean;
}

/** A lane's queue, counters and policy state inside an engine. */
export class LaneState<C extends Queued> {
  readonly id: string;
  readonly priority: number;
  readonly min: number;
  readonly max: number;
  readonly boost: PriorityBoost | undefined;
  readonly bucket: TokenBucket | undefined;
  /** Live pending commands; the ring may also hold tombstones of cancelled ones. */
  pending = 0;
  active = 0;
  delayed = 0;
  paused = false;
  pressured = false;
  private readonly queue = new Ring<C>();

  readonly counts = { submitted: 0, completed: 0, failed: 0, timeout: 0, retried: 0, deadLettered: 0, cancelled: 0 };
  readonly latency = new Histogram();
  readonly wait = new Histogram();

  constructor(
    readonly config: LaneConfig,
    now: number,
  ) {
    this.id = config.id;
    this.priority = config.priority;
    this.min = config.minConcurrency;
    this.max = config.maxConcurrency;
    // effectivePriority relies on the intervals being ordered largest threshold first.
    this.boost = config.boost && {
      deadlineMs: config.boost.deadlineMs,
      intervals: [...config.boost.intervals].sort((a, b) => b[0] - a[0]),
    };
    this.bucket = config.rateLimit && new TokenBucket(config.rateLimit.maxCommands, config.rateLimit.windowMs, now);
  }

  push(command: C): void {
    this.queue.push(command);
    command.queued = true;
    this.pending++;
  }

  /** The oldest live pending command, dropping tombstones in front of it. */
  head(): C | undefined {
    let command = this.queue.peek();
    // An entry left behind when its command was unqueued or taken is a tombstone, even if that
    // command is pending again (a retry queues it anew): it counts once, at its live entry.
    while (command !== undefined && (command.state !== CommandState.Pending || !command.queued)) {
      this.queue.shift();
      command = this.queue.peek();
    }
    return command;
  }

  /** Returns a taken command to the head of the queue. */
  pushFront(command: C): void {
    this.queue.unshift(command);
    command.queued = true;
    this.pending++;
  }

  /**
   * Removes and returns the head; the caller has checked `pending > 0`. The count is the number of
   * live entries (push, pushFront, take and unqueue keep it so), so a live head is always there.
   */
  take(): C {
    const command = this.head();
    if (command === undefined) throw new Error(`lane ${this.id}: pending count ${this.pending} but no pending command queued`);
    this.queue.shift();
    command.queued = false;
    this.pending--;
    return command;
  }

  /**
   * Forgets a pending command in O(1): it stays in the ring as a tombstone until dispatch reaches it.
   * One not queued here (see Queued.queued) changes nothing: counting it would clear live entries.
   */
  unqueue(command: C): void {
    if (!command.queued) return;
    command.queued = false;
    this.pending--;
    if (this.pending === 0) this.queue.clear();
  }

  /** Has work it could start now, ignoring the global cap. */
  ready(now: number): boolean {
    return (
      this.pending > 0 &&
      !this.paused &&
      this.active < this.max &&
      (this.bucket === undefined || this.bucket.msUntilToken(now) === 0)
    );
  }

  /** Slots still owed to this lane under the global cap. */
  unusedReservation(): number {
    return this.min > this.active ? this.min - this.active : 0;
  }

  effectivePriority(now: number): number {
    return this.boost === undefined ? this.priority : effectivePriority(this.priority, this.boost, this.head()!.submittedAt, now);
  }

  metrics(): LaneMetrics {
    return {
      id: this.id,
      priority: this.priority,
      pending: this.pending,
      active: this.active,
      delayed: this.delayed,
      paused: this.paused,
      pressured: this.pressured,
      ...this.counts,
      latencyMs: this.latency.summary(),
      waitMs: this.wait.summary(),
    };
  }
}
