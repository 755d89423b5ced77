import type { Redis } from 'ioredis';
import { Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Command } from '../command.js';
import { errorMessage, noop } from '../errors.js';
import type { LaneState } from '../lane-state.js';
import { retryDelayMs } from '../policies.js';
import type { DeadLetter } from '../types.js';
import type { RedisCalls } from './redis-calls.js';
import type { Signal, SignalStream } from './signals.js';

/** A job's data: the command's payload and who waits for its outcome (see `SUBMITTER_ANY`). */
export interface JobData {
  payload: unknown;
  /** The submitting engine's id, or SUBMITTER_ANY. */
  s?: string;
}

/** A job this engine holds: fetched (active in BullMQ) under its lock token. */
export interface Lease {
  job: Job;
  token: string;
}

/**
 * `JobData.s` of a command with a caller-chosen id: engines that submitted the same id all wait for
 * it, so whoever runs it reports taking it and its outcome. A generated id has one submitter, and
 * the executor reports only when that is another engine.
 */
export const SUBMITTER_ANY = '*';
/** Local timers for a job's retry fire this much after BullMQ's delay, so the job is due when fetched. */
export const REQUEUE_SLACK_MS = 2;
/** Job states from which cancel() may remove a job: it is queued, nobody holds it. */
export const QUEUED_STATES = new Set(['waiting', 'prioritized', 'delayed', 'paused']);
const FAILED_STATES = new Set(['failed']);
/** What an outcome write that failed resolves to: its job stays where it is until a fetch finds it. */
const nothing = (): undefined => undefined;

export interface LaneJobsOptions {
  prefix: string;
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
  dlqSize: number;
  engineId: string;
  /** Queue operations: fail fast while Redis is away. */
  producer: Redis;
  /** Fetches and outcomes: queued while Redis is away, so running handlers can finish. */
  consumer: Redis;
  calls: RedisCalls;
  signals: SignalStream;
  /** This engine's stalled-job check moved a job back to wait or failed it; the signal is already sent. */
  onStalled: (message: Signal) => void;
}

interface LaneRuntime {
  queue: Queue;
  worker: Worker;
  /** The job a completion fetched for the lane's next grant (see `complete`). */
  prefetched: Lease | undefined;
}

/**
 * The BullMQ side of an engine's lanes: one Queue per lane (queue name = lane id) and one Worker in
 * manual mode, so that the engine's gate, not BullMQ, decides which lane fetches. Every operation on
 * a job goes through here (add, fetch, complete, retry, fail, give back, remove, look up), with the
 * signal it owes the other engines, as do the locks of the jobs this engine holds.
 */
export class LaneJobs {
  private readonly runtimes = new Map<LaneState<Command>, LaneRuntime>();
  /** Jobs held by the commands running here; their locks are renewed every lockDurationMs / 2. */
  private readonly leases = new Map<Command, Lease>();
  /** Ids of submits that gave up while their add was in flight: such a job is removed, never run. */
  private readonly refused = new Set<string>();
  /** The latest add of each id still in flight (one token per add): only it may refuse or undo the id's job. */
  private readonly adding = new Map<string, object>();
  private readonly tokenPrefix: string;
  private tokenSequence = 0;
  private lockTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly lanes: readonly LaneState<Command>[],
    private readonly options: LaneJobsOptions,
  ) {
    const { prefix, consumer, producer } = options;
    this.tokenPrefix = `${options.engineId}:`;
    for (const lane of lanes) {
      const policy = lane.config.retry;
      const queue = new Queue(lane.id, { connection: producer, prefix });
      queue.on('error', noop);
      const worker = new Worker(lane.id, null, {
        connection: consumer,
        prefix,
        autorun: false,
        lockDuration: options.lockDurationMs,
        stalledInterval: options.stalledIntervalMs,
        maxStalledCount: options.maxStalledCount,
        // a3s-lane's backoff: initial × multiplier^(k−1), truncated, capped (policies.retryDelayMs).
        settings: { backoffStrategy: (attemptsMade: number) => (policy ? retryDelayMs(policy, attemptsMade) : 0) },
      });
      worker.on('error', noop);
      // Only the engine whose check found the stall learns of it; it tells the others.
      worker.on('stalled', (jobId: string) => void this.stalled(lane, jobId));
      this.runtimes.set(lane, { queue, worker, prefetched: undefined });
    }
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  /** Sets the lane's cluster cap and starts its stalled check; returns the ids of the jobs queued now. */
  async start(lane: LaneState<Command>): Promise<string[]> {
    const { queue, worker } = this.runtime(lane);
    const cap = lane.config.clusterMaxConcurrency;
    if (cap !== undefined) await queue.setGlobalConcurrency(cap);
    void worker.startStalledCheckTimer().catch(noop);
    await queue.waitUntilReady();
    const [waiting, prioritized] = await Promise.all([
      this.options.producer.lrange(queue.keys.wait!, 0, -1),
      this.options.producer.zrange(queue.keys.prioritized!, 0, -1),
    ]);
    return [...waiting.reverse(), ...prioritized];
  }

  startLockRenewal(): void {
    this.lockTimer = setInterval(this.renewLocks, this.options.lockDurationMs / 2);
    this.lockTimer.unref();
  }

  stopLockRenewal(): void {
    clearInterval(this.lockTimer);
  }

  /** Closes the workers and queues, waiting no longer than the command timeout. */
  async close(): Promise<void> {
    const closing = [...this.runtimes.values()].map(({ worker, queue }) => Promise.all([worker.close(true), queue.close()]));
    await this.options.calls.bounded(Promise.all(closing)).catch(noop);
  }

  // ---- submitting -----------------------------------------------------------------------------

  /** Adds the command's job, or revives the dead letter `revive` with the command's data. */
  add(command: Command, submitter: string, revive: Job | undefined): Promise<unknown> {
    const data: JobData = { payload: command.payload, s: submitter };
    if (revive) {
      // Whoever waited for the failed job has its failure; now this engine waits for the outcome.
      return revive.updateData(data).then(() => revive.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true }));
    }
    const policy = command.lane.config.retry;
    const dlqSize = this.options.dlqSize;
    return this.runtime(command.lane).queue.add(command.type, data, {
      jobId: command.id,
      attempts: (policy?.maxRetries ?? 0) + 1,
      backoff: policy ? { type: 'a3s', delay: policy.initialDelayMs } : undefined,
      removeOnComplete: true,
      // The failed set is the DLQ: terminal failures stay, the oldest evicted beyond dlqSize.
      removeOnFail: dlqSize === 0 ? true : { count: dlqSize },
    });
  }

  /**
   * Bounds an add by the command timeout; an add that lands after its submit gave up is removed. A
   * later submit of the same id (a run handed over again after Redis lost its job, sweeps.ts)
   * supersedes a submit that gave up: the job is then the later submit's, and runs. Undoing it by id
   * left such a run dispatched with no job (found by test/faults/redis-aof-restart.test.ts).
   */
  guardAdd(command: Command, write: Promise<unknown>): Promise<unknown> {
    const { calls } = this.options;
    const { id } = command;
    // Per add, not per command: a command whose job Redis lost is added again (bullmq-engine.ts submit).
    const token = {};
    this.adding.set(id, token);
    this.refused.delete(id);
    const latest = () => this.adding.get(id) === token;
    let gaveUp = false;
    write
      .then(() => (gaveUp && latest() ? this.remove(command.lane, id) : undefined))
      .catch(noop)
      .finally(() => {
        if (!latest()) return;
        this.adding.delete(id);
        this.refused.delete(id);
      });
    return calls.track(
      calls.bounded(write, () => {
        // The add may still reach Redis after the submit gave up: undo it then, and never run it here.
        if (!latest()) return;
        gaveUp = true;
        this.refused.add(id);
      }),
    );
  }

  /** Whether the job's submit gave up: it must not run. */
  isRefused(jobId: string): boolean {
    return this.refused.has(jobId);
  }

  // ---- running --------------------------------------------------------------------------------

  /** A fresh lock token for a fetch. */
  token(): string {
    return `${this.tokenPrefix}${this.tokenSequence++}`;
  }

  /** Moves the lane's next job to active under `token`. */
  fetch(lane: LaneState<Command>, token: string): Promise<Job | undefined> {
    return this.options.calls.track(this.runtime(lane).worker.getNextJob(token, { block: false }));
  }

  /** The job a completion already fetched for the lane, taken by the grant that runs it. */
  takePrefetched(lane: LaneState<Command>): Lease | undefined {
    const runtime = this.runtime(lane);
    const prefetched = runtime.prefetched;
    runtime.prefetched = undefined;
    return prefetched;
  }

  /** Keeps a job fetched by a completion for the lane's next grant. */
  keepPrefetched(lane: LaneState<Command>, lease: Lease): void {
    this.runtime(lane).prefetched = lease;
  }

  hold(command: Command, lease: Lease): void {
    this.leases.set(command, lease);
  }

  /** Forgets the job the command holds and returns it. */
  release(command: Command): Lease | undefined {
    const lease = this.leases.get(command);
    this.leases.delete(command);
    return lease;
  }

  holds(command: Command): boolean {
    return this.leases.has(command);
  }

  /**
   * Completes the job with `stored` (the handler's value, null for undefined) and reports it. With
   * `prefetch`, the same round trip moves the lane's next job to active: resolves to it, if any.
   */
  complete(lane: LaneState<Command>, lease: Lease, stored: unknown, prefetch: boolean): Promise<Lease | undefined> {
    const { job, token } = lease;
    return this.options.calls.track(job.moveToCompleted(stored, token, prefetch)).then((next) => {
      this.report(job, ['c', job.id!, stored]);
      if (!prefetch || !Array.isArray(next) || !next[0]) return undefined;
      const nextJob = Job.fromJSON(this.runtime(lane).worker as never, next[0], next[1]);
      nextJob.token = token;
      return { job: nextJob, token };
    }, nothing);
  }

  /**
   * Fails the attempt and leaves the retry to BullMQ, which decides as the lane's policy does
   * (attempts = maxRetries + 1, same backoff). Resolves to the signal reported for the retry.
   */
  retryLater(lease: Lease, command: Command, error: unknown): Promise<Signal | undefined> {
    const asError = error instanceof Error ? error : new Error(errorMessage(error));
    return this.options.calls.track(lease.job.moveToFailed(asError, lease.token, false)).then(() => {
      const lane = command.lane;
      const delayMs = retryDelayMs(lane.config.retry!, command.executions);
      const retry: Signal = delayMs === 0 ? ['w', lane.id, command.id] : ['d', lane.id, command.id, Date.now() + delayMs];
      this.report(lease.job, retry);
      return retry;
    }, nothing);
  }

  /** Fails the job for good: it stays in the failed set, the DLQ. */
  fail(lease: Lease, message: string): Promise<void> {
    return this.options.calls.track(lease.job.moveToFailed(new UnrecoverableError(message), lease.token, false)).then(
      () => this.report(lease.job, ['f', lease.job.id!, message]),
      noop,
    );
  }

  /** Fails a running job and deletes it: a cancelled or closed command is no dead letter. */
  failQuietly(lease: Lease, message: string): Promise<void> {
    return this.options.calls.track(this.failAndDelete(lease, message));
  }

  private async failAndDelete(lease: Lease, message: string): Promise<void> {
    lease.job.opts.removeOnFail = true;
    await lease.job.moveToFailed(new UnrecoverableError(message), lease.token, false).then(
      () => this.report(lease.job, ['f', lease.job.id!, message]),
      noop,
    );
  }

  /** Puts a job this engine holds back to wait, for any engine to run, and says so. */
  giveBack(lane: LaneState<Command>, lease: Lease): void {
    void this.options.calls.track(lease.job.moveToWait(lease.token).then(() => this.announce(lane, lease.job.id!), noop));
  }

  /** Tells the other engines that the job waits on its lane: idle ones fetch it. */
  announce(lane: LaneState<Command>, jobId: string): void {
    this.options.signals.send(['w', lane.id, jobId]);
  }

  /** Puts a job back to wait without a signal: whoever still has it queued fetches it. */
  putBack(lease: Lease): void {
    void this.options.calls.track(lease.job.moveToWait(lease.token).catch(noop));
  }

  /** Signals what happened to a job when someone other than this engine may be waiting for it. */
  report(job: Job, message: Signal): void {
    if ((job.data as JobData).s !== this.options.engineId) this.options.signals.send(message);
  }

  // ---- looking up and removing ----------------------------------------------------------------

  async remove(lane: LaneState<Command>, jobId: string): Promise<boolean> {
    let removed = false;
    try {
      removed = (await this.options.calls.track(this.runtime(lane).queue.remove(jobId))) === 1;
    } catch {
      // Redis away or the job is gone: nothing was removed.
    }
    // Its submitter (if another engine) rejects `cancelled`; other engines drop their hints.
    if (removed) this.options.signals.send(['r', jobId]);
    return removed;
  }

  state(lane: LaneState<Command>, jobId: string): Promise<string> {
    return this.runtime(lane).queue.getJobState(jobId);
  }

  /** The lane whose queue holds the job in one of `states`. */
  async find(jobId: string, states: Set<string>): Promise<LaneState<Command> | undefined> {
    const found = await this.options.calls.bounded(Promise.all(this.lanes.map((lane) => this.state(lane, jobId))));
    const index = found.findIndex((state) => states.has(state));
    return index < 0 ? undefined : this.lanes[index];
  }

  /** A job in the failed set (a dead letter), with its lane. */
  async failed(jobId: string): Promise<[LaneState<Command>, Job] | undefined> {
    const lane = await this.find(jobId, FAILED_STATES);
    if (lane === undefined) return undefined;
    const job = await this.runtime(lane).queue.getJob(jobId);
    return job ? [lane, job] : undefined;
  }

  /**
   * Every lane's failed set, oldest first; at most dlqSize letters (each lane's set holds up to dlqSize).
   * Letters that failed in the same millisecond come in the set's own order (by job id, the order in
   * which BullMQ evicts them too): getFailed gives the newest first, so each lane's list is turned
   * round before the stable sort below, which keeps it for ties (two letters of one millisecond came
   * back newest first in a CI run).
   */
  async deadLetters(): Promise<DeadLetter[]> {
    const limit = this.options.dlqSize;
    if (limit === 0) return [];
    const perLane = await this.options.calls.bounded(
      Promise.all(
        this.lanes.map(async (lane) => {
          const jobs = await this.runtime(lane).queue.getFailed(0, limit - 1);
          return jobs
            .filter((job): job is Job => job !== undefined)
            .reverse()
            .map((job) => toDeadLetter(job, lane.id));
        }),
      ),
    );
    return perLane
      .flat()
      .sort((a, b) => a.failedAt - b.failedAt)
      .slice(-limit);
  }

  /** Each lane's queue in Redis (waiting + prioritized), in lane order. */
  async pendingCounts(): Promise<number[]> {
    const counts = await this.options.calls.bounded(
      Promise.all(this.lanes.map((lane) => this.runtime(lane).queue.getJobCounts('wait', 'prioritized'))),
    );
    return counts.map((count) => (count.wait ?? 0) + (count.prioritized ?? 0));
  }

  // ---- internals ------------------------------------------------------------------------------

  private runtime(lane: LaneState<Command>): LaneRuntime {
    return this.runtimes.get(lane)!;
  }

  /** A stall check of this engine moved the job back to wait, or failed it after too many stalls. */
  private async stalled(lane: LaneState<Command>, jobId: string): Promise<void> {
    const { queue } = this.runtime(lane);
    let message: Signal | undefined;
    try {
      const state = await queue.getJobState(jobId);
      if (state === 'waiting' || state === 'prioritized') message = ['w', lane.id, jobId];
      else if (state === 'failed') message = ['f', jobId, (await queue.getJob(jobId))?.failedReason ?? 'job stalled more than allowable limit'];
    } catch {
      // Redis away: the job stays where it is until someone fetches on its lane.
    }
    if (message === undefined) return;
    this.options.signals.send(message);
    this.options.onStalled(message);
  }

  private readonly renewLocks = (): void => {
    const byLane = new Map<LaneState<Command>, Lease[]>();
    for (const [command, lease] of this.leases) {
      const list = byLane.get(command.lane);
      if (list) list.push(lease);
      else byLane.set(command.lane, [lease]);
    }
    for (const [lane, leases] of byLane) {
      void this.runtime(lane)
        .worker.extendJobLocks(
          leases.map((lease) => lease.job.id!),
          leases.map((lease) => lease.token),
          this.options.lockDurationMs,
        )
        .catch(noop);
    }
  };
}

function toDeadLetter(job: Job, laneId: string): DeadLetter {
  return {
    commandId: job.id!,
    commandType: job.name,
    laneId,
    payload: (job.data as JobData).payload,
    error: job.failedReason,
    attempts: job.attemptsMade,
    failedAt: job.finishedOn ?? job.timestamp,
  };
}
