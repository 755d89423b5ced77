import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { type Command, CommandState, type Execution } from './command.js';
import { errorMessage, laneErrors } from './errors.js';
import type { LaneState } from './lane-state.js';
import { retryDelayMs } from './policies.js';
import { LaneSchedulerCore, noop } from './scheduler-core.js';
import type { EngineOptions, LaneError } from './types.js';

export interface BullMQEngineOptions extends EngineOptions {
  /** A Redis URL or ioredis options. */
  connection: string | RedisOptions;
  /**
   * Key prefix of every lane queue. Keep a hash tag in it (the default is `{asm}`) so that all of a
   * queue's keys hash to one slot on Redis Cluster.
   */
  prefix?: string;
}

interface LaneRuntime {
  queue: Queue;
  worker: Worker;
}

/** What the engine knows of the BullMQ job a running command holds. */
interface Lease {
  job: Job;
  token: string;
}

/** A retry's local requeue fires this much after BullMQ's delay, so the job is due when fetched. */
const REQUEUE_SLACK_MS = 2;
/** When a fetch finds nothing (a retry not promoted yet), dispatch tries again after this. */
const REFETCH_MS = 10;

/**
 * The BullMQ lane engine: the shared scheduler (scheduler-core.ts) with the commands themselves held
 * in Redis. What it adds to the core: a submit also adds a job, a granted slot fetches a job before
 * the handler runs, outcomes complete, fail or remove that job, and close() closes Redis.
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
 * maxConcurrency, pause, token-bucket rate limit; it is the same code). Only when the gate grants a lane a slot does its
 * worker fetch one job. The gate works from local counters of what this engine submitted, so
 * pending, pressure/idle, rate limits and the global cap are per engine instance (per node), not
 * cluster-wide; see README.md ("BullMQ engine") for every difference from the in-process engine.
 *
 * Timeouts and cancellation: each execution gets an AbortSignal (Execution.signal) aborted by the
 * lane timeout, by cancel() and by close(); the slot is released at that moment even if the handler
 * never settles. A cancelled execution is failed with UnrecoverableError so that BullMQ does not
 * retry it. Events are emitted by this engine as it moves jobs, with the a3s keys.
 */
export class BullMQLaneEngine extends LaneSchedulerCore {
  private readonly runtimes = new Map<string, LaneRuntime>();
  private readonly leases = new Map<Command, Lease>();
  private readonly redis: Redis;
  private refetchTimer: NodeJS.Timeout | undefined;
  /** Redis writes in flight (adds, removes), awaited by close(). */
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(options: BullMQEngineOptions) {
    // Grants only start fetches, so a pass never runs handlers and needs no burst limit.
    super(options, Infinity);
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
      this.runtimes.set(state.id, { queue, worker });
    }
  }

  // ---- store hooks ----------------------------------------------------------------------------

  protected override persist(command: Command): Promise<unknown> {
    const policy = command.lane.config.retry;
    return this.track(
      this.runtimes.get(command.lane.id)!.queue.add(
        command.type,
        { payload: command.payload },
        {
          jobId: command.id,
          attempts: (policy?.maxRetries ?? 0) + 1,
          backoff: policy ? { type: 'a3s', delay: policy.initialDelayMs } : undefined,
          removeOnComplete: true,
          removeOnFail: true,
        },
      ),
    );
  }

  protected override async unstore(command: Command): Promise<void> {
    const runtime = this.runtimes.get(command.lane.id)!;
    await this.track(runtime.queue.remove(command.id)).catch(noop);
  }

  protected override abandon(command: Command, error: LaneError): void {
    const lease = this.leases.get(command);
    if (lease === undefined) return; // still fetching: fetchAndRun fails the job it gets
    this.leases.delete(command);
    void this.track(lease.job.moveToFailed(new UnrecoverableError(error.message), lease.token, false));
  }

  protected override onPause(lane: LaneState): Promise<void> {
    return this.runtimes.get(lane.id)!.queue.pause();
  }

  protected override onResume(lane: LaneState): Promise<void> {
    return this.runtimes.get(lane.id)!.queue.resume();
  }

  protected override stopTimers(): void {
    clearTimeout(this.refetchTimer);
  }

  protected override async afterClose(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
    for (const { worker, queue } of this.runtimes.values()) {
      await worker.close(true).catch(noop);
      await queue.close().catch(noop);
    }
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  /** A zero delay went straight back to BullMQ's wait list; a positive one is due after its delay. */
  protected override requeueDelayMs(delayMs: number): number {
    return delayMs === 0 ? 0 : delayMs + REQUEUE_SLACK_MS;
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.inflight.add(promise);
    const done = () => this.inflight.delete(promise);
    promise.then(done, done);
    return promise;
  }

  // ---- launch ---------------------------------------------------------------------------------

  protected launch(command: Command): void {
    void this.fetchAndRun(command);
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
    this.leases.set(command, lease);
    const run = this.begin(command);
    if (command.cancelRequested) run.abort(laneErrors.cancelled());
    this.invoke(command, run);
  }

  // ---- outcomes -------------------------------------------------------------------------------

  // The run is detached before the Redis write, so that a timeout or a second outcome arriving
  // meanwhile is stale; the slot is held until BullMQ has acknowledged the outcome.

  protected async onSuccess(command: Command, run: Execution, value: unknown): Promise<void> {
    if (command.run !== run) return;
    command.lane.latency.record(performance.now() - run.startedAt);
    command.run = undefined;
    clearTimeout(command.timer);
    const lease = this.leases.get(command);
    this.leases.delete(command);
    if (lease) {
      // BullMQ stores the return value as JSON; undefined is stored as null.
      await this.track(lease.job.moveToCompleted(value === undefined ? null : value, lease.token, false)).catch(noop);
    }
    if (command.state === CommandState.Done) return; // closed meanwhile
    this.completed(command, value);
  }

  protected async onFailure(command: Command, run: Execution, error: unknown, timedOut: boolean): Promise<void> {
    if (command.run !== run) return;
    command.run = undefined;
    clearTimeout(command.timer);
    const retrying = this.retrying(command);
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
    this.failedAttempt(command, error, timedOut, retrying);
  }
}
