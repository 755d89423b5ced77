import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { Command, CommandState, Execution } from './command.js';
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

export interface BullMQEngineOptions extends EngineOptions {
  /** A Redis URL or ioredis options. */
  connection: string | RedisOptions;
  /**
   * Key prefix of every lane queue. Keep a hash tag in it (the default is `{asm}`) so that all of a
   * queue's keys hash to one slot on Redis Cluster.
   */
  prefix?: string;
}

interface Subscriber {
  listener: LaneEventListener;
  filter: ((event: LaneEvent) => boolean) | undefined;
}

interface DrainWaiter {
  resolve: () => void;
  timer: NodeJS.Timeout;
}

interface LaneRuntime {
  state: LaneState;
  queue: Queue;
  worker: Worker;
}

/** What the engine knows of the BullMQ job a running command holds. */
interface Lease {
  job: Job;
  token: string;
}

const noop = () => {};
/** A retry's local requeue fires this much after BullMQ's delay, so the job is due when fetched. */
const REQUEUE_SLACK_MS = 2;
/** When a fetch finds nothing (a retry not promoted yet), dispatch tries again after this. */
const REFETCH_MS = 10;

/**
 * The BullMQ lane engine: the same LaneEngine contract as the in-process engine, with the commands
 * themselves held in Redis.
 *
 * Layout: one BullMQ Queue per lane (queue name = lane id, prefix with a hash tag for Cluster), and
 * one Worker per lane used in BullMQ's *manual* mode (no processor; `getNextJob` / `moveToCompleted`
 * / `moveToFailed`). A command is a job named by its type whose data is `{ payload }`; its job id is
 * the command id, so a caller-chosen id is also BullMQ's idempotency key. Attempts are
 * `maxRetries + 1` and the backoff is a custom strategy (`a3s`) that returns `retryDelayMs` of the
 * lane's policy, so the retry sits in BullMQ's delayed set and rejoins the tail of its lane.
 *
 * Dispatch gate (the design choice for cross-lane priority on one node): BullMQ orders jobs only
 * within a queue, so the choice of *which lane* fetches next is made locally, with exactly the rule
 * of the in-process engine (priority with boost, minConcurrency reservations under the global cap,
 * maxConcurrency, pause, token-bucket rate limit). Only when the gate grants a lane a slot does its
 * worker fetch one job. The gate works from local counters of what this engine submitted, so
 * pending, pressure/idle, rate limits and the global cap are per engine instance (per node), not
 * cluster-wide; see README.md ("BullMQ engine") for every difference from the in-process engine.
 *
 * Timeouts and cancellation: each execution gets an AbortSignal (Execution.signal) aborted by the
 * lane timeout, by cancel() and by close(); the slot is released at that moment even if the handler
 * never settles. A cancelled execution is failed with UnrecoverableError so that BullMQ does not
 * retry it. Events are emitted by this engine as it moves jobs, with the a3s keys.
 */
export class BullMQLaneEngine implements LaneEngine {
  private readonly configs: LaneConfig[];
  private readonly laneList: LaneState[];
  private readonly runtimes = new Map<string, LaneRuntime>();
  private readonly handlers = new Map<string, CommandHandler>();
  private readonly live = new CommandIndex();
  private readonly leases = new Map<Command, Lease>();
  /** Dead letters, insertion-ordered (oldest first). Kept by this engine; see README. */
  private readonly dlq = new Map<string, DeadLetter>();
  private readonly dlqSize: number;
  private readonly globalCap: number;
  private readonly reserves: boolean;
  private readonly rateLimited: boolean;
  private readonly redis: Redis;

  private subscribers: Subscriber[] = [];
  private started = false;
  private shuttingDown = false;
  private closed = false;
  private globalActive = 0;
  private outstanding = 0;
  private readonly drainWaiters = new Set<DrainWaiter>();
  private tokenTimer: NodeJS.Timeout | undefined;
  private tokenTimerAt = Infinity;
  private refetchTimer: NodeJS.Timeout | undefined;
  private readonly requeueTimers = new Set<NodeJS.Timeout>();
  /** Redis writes in flight (adds, removes), awaited by close(). */
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(options: BullMQEngineOptions) {
    validateEngineOptions(options);
    const now = performance.now();
    this.configs = options.lanes.map((config) => structuredClone(config));
    this.laneList = this.configs.map((config) => new LaneState(config, now));
    this.dlqSize = options.dlqSize ?? 0;
    this.globalCap = options.globalConcurrency ?? Infinity;
    this.reserves = options.globalConcurrency !== undefined && this.laneList.some((lane) => lane.min > 0);
    this.rateLimited = this.laneList.some((lane) => lane.bucket !== undefined);
    const redisOptions: RedisOptions = { maxRetriesPerRequest: null };
    this.redis =
      typeof options.connection === 'string'
        ? new Redis(options.connection, redisOptions)
        : new Redis({ ...options.connection, ...redisOptions });
    this.redis.on('error', noop);
    const prefix = options.prefix ?? '{asm}';
    for (const state of this.laneList) {
      const policy = state.config.retry;
      const queue = new Queue(state.id, { connection: this.redis, prefix });
      queue.on('error', noop);
      const worker = new Worker(state.id, null, {
        connection: this.redis,
        prefix,
        autorun: false,
        // a3s backoff math: initial × multiplier^(k−1), truncated, capped (policies.retryDelayMs).
        settings: { backoffStrategy: (attemptsMade: number) => (policy ? retryDelayMs(policy, attemptsMade) : 0) },
      });
      worker.on('error', noop);
      this.runtimes.set(state.id, { state, queue, worker });
    }
  }

  register(type: string, handler: CommandHandler): void {
    this.handlers.set(type, handler);
  }

  async start(): Promise<void> {
    if (this.started || this.closed) return;
    this.started = true;
    this.dispatch();
  }

  async submit(laneId: string, spec: CommandSpec): Promise<CommandHandle> {
    if (this.shuttingDown) throw laneErrors.shuttingDown();
    const runtime = this.runtimes.get(laneId);
    if (runtime === undefined) throw laneErrors.laneNotFound(laneId);
    const lane = runtime.state;
    const handler = this.handlers.get(spec.type);
    if (handler === undefined) throw laneErrors.unknownCommandType(spec.type);
    if (spec.id !== undefined) {
      const existing = this.live.get(spec.id);
      if (existing !== undefined) return { id: existing.id, result: existing.result };
    }
    const maxPending = lane.config.maxPending;
    if (maxPending !== undefined && lane.pending >= maxPending) throw laneErrors.queueFull(laneId, maxPending);

    const slot = this.live.claimSlot();
    const id = spec.id ?? this.live.generateId(slot);
    const command = new Command(slot, id, spec.type, spec.payload, lane, handler, performance.now());
    // Registered before the Redis write, so that a concurrent submit with this id joins it.
    this.live.add(command, spec.id !== undefined);
    this.outstanding++;
    const policy = lane.config.retry;
    try {
      await this.track(
        runtime.queue.add(
          spec.type,
          { payload: spec.payload },
          {
            jobId: id,
            attempts: (policy?.maxRetries ?? 0) + 1,
            backoff: policy ? { type: 'a3s', delay: policy.initialDelayMs } : undefined,
            removeOnComplete: true,
            removeOnFail: true,
          },
        ),
      );
    } catch (error) {
      this.settle(command);
      throw error;
    }
    if (command.state === CommandState.Done) return { id, result: command.result }; // closed meanwhile
    lane.counts.submitted++;
    this.emit('queue.command.submitted', { lane_id: lane.id, command_id: id, command_type: command.type });
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
      command.run?.abort(error);
      return 'active';
    }
    this.discard(command, error);
    await this.removeJob(command);
    return 'pending';
  }

  subscribe(listener: LaneEventListener, filter?: (event: LaneEvent) => boolean): () => void {
    const subscriber: Subscriber = { listener, filter };
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

  async pause(laneId: string): Promise<void> {
    const runtime = this.runtime(laneId);
    runtime.state.paused = true;
    await runtime.queue.pause();
  }

  async resume(laneId: string): Promise<void> {
    const runtime = this.runtime(laneId);
    await runtime.queue.resume();
    runtime.state.paused = false;
    this.dispatch();
  }

  async deadLetters(): Promise<DeadLetter[]> {
    return [...this.dlq.values()];
  }

  async retryDeadLetter(commandId: string): Promise<CommandHandle> {
    const letter = this.dlq.get(commandId);
    if (letter === undefined) throw laneErrors.deadLetterNotFound(commandId);
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
    clearTimeout(this.refetchTimer);
    for (const timer of this.requeueTimers) clearTimeout(timer);
    this.requeueTimers.clear();
    const error = laneErrors.cancelled('engine closed');
    const writes: Array<Promise<unknown>> = [];
    for (const command of this.live.all()) {
      if (command.state === CommandState.Active) {
        const lease = this.leases.get(command);
        command.run?.abort(error);
        this.endExecution(command);
        if (lease !== undefined) {
          this.leases.delete(command);
          writes.push(lease.job.moveToFailed(new UnrecoverableError(error.message), lease.token, false));
        }
        this.discardActive(command, error);
      } else if (command.state !== CommandState.Done) {
        this.discard(command, error);
        writes.push(this.removeJob(command));
      }
    }
    this.emit('queue.shutdown.complete', null);
    this.subscribers = [];
    await Promise.allSettled([...writes, ...this.inflight]);
    for (const { worker, queue } of this.runtimes.values()) {
      await worker.close(true).catch(noop);
      await queue.close().catch(noop);
    }
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  private runtime(laneId: string): LaneRuntime {
    const runtime = this.runtimes.get(laneId);
    if (runtime === undefined) throw laneErrors.laneNotFound(laneId);
    return runtime;
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.inflight.add(promise);
    const done = () => this.inflight.delete(promise);
    promise.then(done, done);
    return promise;
  }

  private async removeJob(command: Command): Promise<void> {
    const runtime = this.runtimes.get(command.lane.id)!;
    await this.track(runtime.queue.remove(command.id)).catch(noop);
  }

  // ---- dispatch gate --------------------------------------------------------------------------

  /** Grants slots to lanes by the in-process engine's rule; each grant fetches one job. */
  private dispatch(): void {
    if (!this.started || this.closed) return;
    for (;;) {
      const lane = this.chooseLane();
      if (lane === undefined) break;
      const command = lane.take();
      this.afterPendingDrop(lane);
      lane.bucket?.take();
      lane.active++;
      this.globalActive++;
      command.state = CommandState.Active;
      void this.fetchAndRun(command);
    }
    if (this.rateLimited) this.armTokenTimer();
  }

  private chooseLane(): LaneState | undefined {
    const free = this.globalCap - this.globalActive;
    if (free <= 0) return undefined;
    const now = performance.now();
    let reserved = 0;
    if (this.reserves) {
      for (const lane of this.laneList) if (lane.ready(now)) reserved += lane.unusedReservation();
    }
    let best: LaneState | undefined;
    let bestPriority = Infinity;
    for (const lane of this.laneList) {
      if (!lane.ready(now)) continue;
      if (this.reserves && lane.active >= lane.min && free <= reserved) continue;
      const priority = lane.effectivePriority(now);
      if (priority < bestPriority) {
        best = lane;
        bestPriority = priority;
      }
    }
    return best;
  }

  private armTokenTimer(): void {
    if (this.globalActive >= this.globalCap) return;
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

  /** Gives a granted slot back and puts the command at the head again (nothing fetchable yet). */
  private unGrant(command: Command): void {
    const lane = command.lane;
    lane.active--;
    this.globalActive--;
    command.state = CommandState.Pending;
    lane.pushFront(command);
    if (this.refetchTimer === undefined && !this.closed) {
      this.refetchTimer = setTimeout(() => {
        this.refetchTimer = undefined;
        this.dispatch();
      }, REFETCH_MS);
    }
  }

  private async fetchAndRun(command: Command): Promise<void> {
    const lane = command.lane;
    const runtime = this.runtimes.get(lane.id)!;
    const token = randomUUID();
    let job: Job | undefined;
    try {
      job = await this.track(runtime.worker.getNextJob(token, { block: false }));
    } catch {
      job = undefined;
    }
    if (this.closed) {
      if (job) await job.moveToFailed(new UnrecoverableError('engine closed'), token, false).catch(noop);
      return;
    }
    if (command.state !== CommandState.Active) {
      // Cancelled or closed while the fetch was in flight.
      if (job) await job.moveToFailed(new UnrecoverableError('cancelled'), token, false).catch(noop);
      return;
    }
    if (job === undefined || job.id === undefined) {
      this.unGrant(command);
      return;
    }
    if (job.id !== command.id) {
      // Redis handed out another job than the local head: run that one if it is ours and pending.
      const other = this.live.get(job.id);
      if (other === undefined || other.state !== CommandState.Pending || other.lane !== lane) {
        // A job this engine did not submit (another process's) or in an unexpected state: give it back.
        await job.moveToWait(token).catch(noop);
        this.unGrant(command);
        return;
      }
      command.state = CommandState.Pending;
      lane.pushFront(command);
      lane.unqueue();
      other.state = CommandState.Active;
      command = other;
    }
    this.execute(command, { job, token });
  }

  private execute(command: Command, lease: Lease): void {
    const lane = command.lane;
    this.leases.set(command, lease);
    command.executions++;
    const now = performance.now();
    const run = new Execution(command.id, lane.id, command.type, command.executions, now);
    command.run = run;
    lane.wait.record(now - (command.requeuedAt ?? command.submittedAt));
    this.emit('queue.command.started', {
      lane_id: lane.id,
      command_id: command.id,
      command_type: command.type,
      attempt: command.executions,
    });
    const timeoutMs = lane.config.timeoutMs;
    if (timeoutMs !== undefined) {
      command.timer = setTimeout(() => {
        if (command.run !== run) return;
        const error = laneErrors.timeout(timeoutMs);
        run.abort(error);
        void this.onFailure(command, run, error, true);
      }, timeoutMs);
    }
    if (command.cancelRequested) run.abort(laneErrors.cancelled());
    let outcome: unknown;
    try {
      outcome = command.handler(command.payload, run);
    } catch (error) {
      void this.onFailure(command, run, error, false);
      return;
    }
    Promise.resolve(outcome).then(
      (value) => this.onSuccess(command, run, value),
      (error) => this.onFailure(command, run, error, false),
    );
  }

  // ---- outcomes -------------------------------------------------------------------------------

  private async onSuccess(command: Command, run: Execution, value: unknown): Promise<void> {
    if (command.run !== run) return;
    const lane = command.lane;
    lane.latency.record(performance.now() - run.startedAt);
    command.run = undefined;
    clearTimeout(command.timer);
    const lease = this.leases.get(command);
    this.leases.delete(command);
    if (lease) {
      // BullMQ stores the return value as JSON; undefined is stored as null.
      await this.track(lease.job.moveToCompleted(value === undefined ? null : value, lease.token, false)).catch(noop);
    }
    if (command.state === CommandState.Done) return; // closed meanwhile
    this.endExecution(command);
    lane.counts.completed++;
    this.emit('queue.command.completed', {
      lane_id: lane.id,
      command_id: command.id,
      command_type: command.type,
      attempt: command.executions,
    });
    this.settle(command);
    command.resolve(value);
    this.dispatch();
  }

  private async onFailure(command: Command, run: Execution, error: unknown, timedOut: boolean): Promise<void> {
    if (command.run !== run) return;
    const lane = command.lane;
    command.run = undefined;
    clearTimeout(command.timer);
    const policy = lane.config.retry;
    const retrying = policy !== undefined && command.executions <= policy.maxRetries && !command.cancelRequested;
    const lease = this.leases.get(command);
    this.leases.delete(command);
    if (lease) {
      // BullMQ decides the same way (attempts = maxRetries + 1, same backoff); a cancelled command
      // is made unrecoverable so that it is not retried.
      const asError = error instanceof Error ? error : new Error(errorMessage(error));
      const sent = retrying ? asError : new UnrecoverableError(asError.message);
      await this.track(lease.job.moveToFailed(sent, lease.token, false)).catch(noop);
    }
    if (command.state === CommandState.Done) return;
    this.endExecution(command);
    if (retrying) this.scheduleRetry(command, retryDelayMs(policy, command.executions), error);
    else this.fail(command, error, timedOut);
    this.dispatch();
  }

  private scheduleRetry(command: Command, delayMs: number, error: unknown): void {
    const lane = command.lane;
    lane.counts.retried++;
    this.emit('queue.command.retry', {
      lane_id: lane.id,
      command_id: command.id,
      command_type: command.type,
      attempt: command.executions,
      delay_ms: delayMs,
      error: errorMessage(error),
    });
    command.state = CommandState.Delayed;
    lane.delayed++;
    const requeue = () => {
      this.requeueTimers.delete(timer);
      if (command.state !== CommandState.Delayed) return;
      command.timer = undefined;
      lane.delayed--;
      command.state = CommandState.Pending;
      command.requeuedAt = performance.now();
      this.enqueue(command);
      this.dispatch();
    };
    // A zero delay went straight back to BullMQ's wait list; a positive one is due after its delay.
    const timer = setTimeout(requeue, delayMs === 0 ? 0 : delayMs + REQUEUE_SLACK_MS);
    this.requeueTimers.add(timer);
    command.timer = timer;
  }

  private fail(command: Command, error: unknown, timedOut: boolean): void {
    const lane = command.lane;
    const message = errorMessage(error);
    if (timedOut) lane.counts.timeout++;
    else lane.counts.failed++;
    if (this.dlqSize > 0) {
      this.dlq.delete(command.id);
      if (this.dlq.size >= this.dlqSize) this.dlq.delete(this.dlq.keys().next().value!);
      this.dlq.set(command.id, {
        commandId: command.id,
        commandType: command.type,
        laneId: lane.id,
        payload: command.payload,
        error: message,
        attempts: command.executions,
        failedAt: Date.now(),
      });
      lane.counts.deadLettered++;
      this.emit('queue.command.dead_lettered', { lane_id: lane.id, command_id: command.id, command_type: command.type });
    }
    this.emit(timedOut ? 'queue.command.timeout' : 'queue.command.failed', {
      lane_id: lane.id,
      command_id: command.id,
      command_type: command.type,
      attempt: command.executions,
      error: message,
    });
    this.settle(command);
    this.rejectResult(command, error);
  }

  /** Removes a pending or delayed command locally and rejects its result. */
  private discard(command: Command, error: LaneError): void {
    const lane = command.lane;
    if (command.state === CommandState.Pending) {
      lane.unqueue();
      this.afterPendingDrop(lane);
    } else if (command.state === CommandState.Delayed) {
      clearTimeout(command.timer);
      if (command.timer !== undefined) this.requeueTimers.delete(command.timer);
      lane.delayed--;
    }
    this.cancelled(command, error);
  }

  /** An active command whose slot close() already released. */
  private discardActive(command: Command, error: LaneError): void {
    this.cancelled(command, error);
  }

  private cancelled(command: Command, error: LaneError): void {
    const lane = command.lane;
    lane.counts.cancelled++;
    this.emit('queue.command.cancelled', {
      lane_id: lane.id,
      command_id: command.id,
      command_type: command.type,
      reason: error.message,
    });
    this.settle(command);
    this.rejectResult(command, error);
  }

  // ---- bookkeeping ----------------------------------------------------------------------------

  private enqueue(command: Command): void {
    const lane = command.lane;
    lane.push(command);
    const threshold = lane.config.pressureThreshold;
    if (threshold !== undefined && !lane.pressured && lane.pending >= threshold) {
      lane.pressured = true;
      this.emit('queue.lane.pressure', { lane_id: lane.id });
    }
  }

  private afterPendingDrop(lane: LaneState): void {
    if (lane.pressured && lane.pending === 0) {
      lane.pressured = false;
      this.emit('queue.lane.idle', { lane_id: lane.id });
    }
  }

  private endExecution(command: Command): void {
    clearTimeout(command.timer);
    command.timer = undefined;
    command.run = undefined;
    command.lane.active--;
    this.globalActive--;
  }

  private settle(command: Command): void {
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

  private rejectResult(command: Command, error: unknown): void {
    command.result.catch(noop);
    command.reject(error);
  }

  private emit(key: LaneEventKey, payload: Record<string, unknown> | null): void {
    const subscribers = this.subscribers;
    if (subscribers.length === 0) return;
    const event: LaneEvent = { key, payload, timestamp: Date.now() };
    for (const { listener, filter } of subscribers) {
      try {
        if (filter === undefined || filter(event)) listener(event);
      } catch {
        // Listeners are observers.
      }
    }
  }
}
