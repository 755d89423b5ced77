import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { Command, type Execution } from './command.js';
import { CommandState } from './command-state.js';
import { errorMessage, laneErrors, noop } from './errors.js';
import type { LaneState } from './lane-state.js';
import { retryDelayMs } from './policies.js';
import { LaneSchedulerCore } from './scheduler-core.js';
import { LaneError, type CommandHandle, type CommandSpec, type DeadLetter, type EngineOptions, type LaneMetrics } from './types.js';

export interface BullMQEngineOptions extends EngineOptions {
  /** A Redis URL or ioredis options. */
  connection: string | RedisOptions;
  /** Options added to every connection, e.g. `tls` with a private CA alongside a `rediss://` URL. */
  redisOptions?: RedisOptions;
  /**
   * Key prefix of every lane queue. Keep a hash tag in it (the default is `{asm}`) so that all of a
   * queue's keys hash to one slot on Redis Cluster.
   */
  prefix?: string;
  /** Lock of a running job; renewed at half this while its handler runs. Default 30 000. */
  lockDurationMs?: number;
  /** How often a lane's stalled-job check runs (jobs whose lock expired go back to wait). Default 30 000. */
  stalledIntervalMs?: number;
  /** Stalls a job survives before it fails as "job stalled more than allowable limit". Default 1. */
  maxStalledCount?: number;
  /** A submit (and a metrics or DLQ read) that Redis does not answer within this fails `unavailable`. Default 5000. */
  commandTimeoutMs?: number;
}

interface LaneRuntime {
  queue: Queue;
  worker: Worker;
  /** The job a completion fetched for the lane's next grant; see `onSuccess`. */
  prefetched: Lease | undefined;
}

/** A job's data: the command's payload and who waits for its outcome (see `SUBMITTER_ANY`). */
interface JobData {
  payload: unknown;
  /** The submitting engine's id, or SUBMITTER_ANY. */
  s?: string;
}

/**
 * What engines tell each other on the signals stream, batched into one entry per event-loop turn.
 * Only what another engine needs is sent: BullMQ's own event streams carry several events per job,
 * and reading them all cost every engine about a third of its throughput.
 */
type Signal =
  /** A job of the lane is waiting: submitted, revived, given back, or recovered from a stall. */
  | ['w', lane: string, jobId: string]
  /** A job of the lane waits out a retry delay until `dueAt` (epoch ms); nothing promotes it without a fetch. */
  | ['d', lane: string, jobId: string, dueAt: number]
  /** The sender took the job to run it. */
  | ['t', jobId: string]
  /** The job completed with this value. */
  | ['c', jobId: string, value: unknown]
  /** The job failed for good (or was cancelled while running) with this message. */
  | ['f', jobId: string, reason: string]
  /** The job was removed from its queue (cancelled). */
  | ['r', jobId: string];
type Taken = Extract<Signal, { 0: 't' }>;
type Outcome = Extract<Signal, { 0: 'c' | 'f' | 'r' }>;

/** What the engine knows of the BullMQ job a running command holds. */
interface Lease {
  job: Job;
  token: string;
}

/** A retry's local requeue fires this much after BullMQ's delay, so the job is due when fetched. */
const REQUEUE_SLACK_MS = 2;
/**
 * `JobData.s` of a command with a caller-chosen id: engines that submitted the same id all wait for
 * it, so whoever runs it reports taking it and its outcome. A generated id has one submitter, and
 * the executor reports only when that is another engine.
 */
const SUBMITTER_ANY = '*';
/** The signals stream is trimmed to about this many entries (each one a batch). */
const SIGNALS_MAX_LEN = 10_000;
/** After a fetch finds nothing for local work, dispatch tries again after this, doubling up to the cap. */
const REFETCH_MS = 10;
const REFETCH_MAX_MS = 500;
/** Job states from which cancel() may remove a job: it is queued, nobody holds it. */
const QUEUED_STATES = new Set(['waiting', 'prioritized', 'delayed', 'paused']);
/**
 * ioredis errors that mean the command never reached Redis (or its answer was lost); the connection
 * status can still read `ready` when the socket has just gone.
 */
const CONNECTION_LOST = /Stream isn't writeable|Connection is closed|ECONNREFUSED|ECONNRESET|EPIPE|max retries per request/i;
/** A hint is a Command that owns no slot of the engine's command index. */
const HINT_SLOT = -1;

/**
 * The BullMQ lane engine: the shared scheduler (scheduler-core.ts) with the commands held in Redis,
 * shared by every engine on the same Redis, prefix and lanes. See README.md ("BullMQ engine") for
 * the distributed model; in short:
 *
 * - One Queue per lane (queue name = lane id); a command is a job named by its type, with data
 *   `{ payload }` and job id = command id. Workers are used in manual mode (`getNextJob`,
 *   `moveToCompleted`, `moveToFailed`) so that the local dispatch gate decides which lane fetches.
 * - The gate's queues hold this engine's own commands plus *hints*: placeholder commands for jobs
 *   other engines submitted, learnt from the signals stream (`Signal`) the engines share. A granted
 *   slot fetches whatever job Redis hands out next on that lane and runs it, whoever submitted it;
 *   a foreign job is *adopted* (registered under its id) for the time it runs here.
 * - A command submitted here but fetched by another engine is `Elsewhere`: the executor signals
 *   that it took the job, then its outcome, and the result settles from that.
 * - Terminal failures stay in BullMQ's failed set, which is the DLQ every engine reads.
 */
export class BullMQLaneEngine extends LaneSchedulerCore {
  private readonly runtimes = new Map<LaneState<Command>, LaneRuntime>();
  private readonly leases = new Map<Command, Lease>();
  /** Foreign jobs known to wait, by job id. */
  private readonly hints = new Map<string, Command>();
  /** Commands this engine runs for another engine's submit. */
  private readonly adopted = new Set<Command>();
  /**
   * Signals (taken, or an outcome) for local commands whose own fetch was in flight: another engine
   * took the job meanwhile. Applied when that fetch comes back without it (see `regrant`).
   */
  private readonly heardDuringFetch = new Map<string, Taken | Outcome>();
  /** Queue operations (submit, cancel, metrics, DLQ): fail fast while Redis is away. */
  private readonly producer: Redis;
  /** Fetches and outcomes: queued while Redis is away, so running handlers can finish. */
  private readonly consumer: Redis;
  /** Blocking XREAD of the signals stream. */
  private readonly signals: Redis;
  private readonly signalsKey: string;
  private readonly signalsReady: Promise<void>;
  private signalsOpen = false;
  private lastSignalId = '0-0';
  /** Signals of this event-loop turn, sent as one stream entry by `flushSignals`. */
  private outbox: Signal[] = [];
  private readonly lockDurationMs: number;
  private readonly commandTimeoutMs: number;
  private readonly dlqLimit: number;
  private readonly engineId = randomUUID();
  private readonly tokenPrefix = `${this.engineId}:`;
  private tokenSequence = 0;
  private refetchTimer: NodeJS.Timeout | undefined;
  private refetchMs = REFETCH_MS;
  private lockTimer: NodeJS.Timeout | undefined;
  private readonly hintTimers = new Set<NodeJS.Timeout>();
  private intakeStopped = false;
  /** Ids of submits that gave up while their add was in flight: such a job is removed, never run. */
  private readonly refused = new Set<string>();
  /** Redis writes in flight, awaited by close(). */
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(options: BullMQEngineOptions) {
    super(options, {
      // Grants only start fetches, so a pass never runs handlers and needs no burst limit.
      burst: Infinity,
      // A retry's local requeue fires this much after BullMQ's delay, so the job is due when fetched.
      requeueSlackMs: REQUEUE_SLACK_MS,
      // The failed set in Redis is the DLQ; nothing is kept in memory.
      keepsDeadLetters: false,
    });
    this.lockDurationMs = options.lockDurationMs ?? 30_000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 5_000;
    this.dlqLimit = options.dlqSize ?? 0;
    const connect = (own: RedisOptions) => {
      const extra = { ...options.redisOptions, ...own };
      return typeof options.connection === 'string' ? new Redis(options.connection, extra) : new Redis({ ...options.connection, ...extra });
    };
    this.producer = connect({ maxRetriesPerRequest: 1, enableOfflineQueue: false });
    this.consumer = connect({ maxRetriesPerRequest: null });
    this.signals = connect({ maxRetriesPerRequest: null });
    for (const client of [this.producer, this.consumer, this.signals]) client.on('error', noop);
    const prefix = options.prefix ?? '{asm}';
    // BullMQ's keys are `<prefix>:<queue>:<suffix>` and a lane id is never empty: no clash.
    this.signalsKey = `${prefix}::signals`;
    for (const state of this.laneList) {
      const policy = state.config.retry;
      const queue = new Queue(state.id, { connection: this.producer, prefix });
      queue.on('error', noop);
      const worker = new Worker(state.id, null, {
        connection: this.consumer,
        prefix,
        autorun: false,
        lockDuration: this.lockDurationMs,
        stalledInterval: options.stalledIntervalMs ?? 30_000,
        maxStalledCount: options.maxStalledCount ?? 1,
        // a3s backoff math: initial × multiplier^(k−1), truncated, capped (policies.retryDelayMs).
        settings: { backoffStrategy: (attemptsMade: number) => (policy ? retryDelayMs(policy, attemptsMade) : 0) },
      });
      worker.on('error', noop);
      // Only the engine whose check found the stall learns of it; it tells the others.
      worker.on('stalled', (jobId: string) => void this.onStalled(state, jobId));
      this.runtimes.set(state, { queue, worker, prefetched: undefined });
    }
    this.signalsReady = this.openSignals();
    this.signalsReady.catch(noop);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  private starting: Promise<void> | undefined;

  override start(): Promise<void> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    if (this.closed) return;
    await this.signalsReady;
    await Promise.all(
      this.laneList.map(async (lane) => {
        const { queue, worker } = this.runtimes.get(lane)!;
        const cap = lane.config.clusterMaxConcurrency;
        if (cap !== undefined) await queue.setGlobalConcurrency(cap);
        void worker.startStalledCheckTimer().catch(noop);
        // Jobs that were queued before this engine listened get hints now; later ones by event.
        await queue.waitUntilReady();
        const [waiting, prioritized] = await Promise.all([
          this.producer.lrange(queue.keys.wait!, 0, -1),
          this.producer.zrange(queue.keys.prioritized!, 0, -1),
        ]);
        for (const id of [...waiting.reverse(), ...prioritized]) if (this.commands.live.get(id) === undefined) this.hint(lane, id);
      }),
    );
    this.lockTimer = setInterval(this.renewLocks, this.lockDurationMs / 2);
    this.lockTimer.unref();
    await super.start();
  }

  override async shutdown(): Promise<void> {
    // Other engines' work is theirs to finish once this one stops taking work.
    this.intakeStopped = true;
    for (const hint of this.hints.values()) this.dropHint(hint);
    await super.shutdown();
  }

  protected override async teardown(): Promise<void> {
    clearTimeout(this.refetchTimer);
    clearInterval(this.lockTimer);
    for (const timer of this.hintTimers) clearTimeout(timer);
    this.hintTimers.clear();
    // Outcomes, removals and their signals get their chance to reach Redis, but a Redis that is away
    // cannot hold close() up.
    await this.bounded(Promise.allSettled([...this.inflight])).catch(noop);
    this.flushSignals();
    await this.bounded(Promise.allSettled([...this.inflight])).catch(noop);
    this.signals.disconnect();
    await this.bounded(
      Promise.all([...this.runtimes.values()].map(({ worker, queue }) => Promise.all([worker.close(true), queue.close()]))),
    ).catch(noop);
    for (const client of [this.producer, this.consumer]) client.disconnect();
  }

  // ---- store hooks ----------------------------------------------------------------------------

  /** Set by retryDeadLetter for the submit it makes: that submit revives the failed job instead of adding one. */
  private reviving: Job | undefined;

  protected override persist(command: Command): Promise<unknown> {
    const revive = this.reviving?.id === command.id ? this.reviving : undefined;
    // Signals about the job must not come before the point the reader starts from.
    const write = this.signalsOpen ? this.storeJob(command, revive) : this.signalsReady.then(() => this.storeJob(command, revive));
    return this.track(
      this.bounded(write, () => {
        // The add may still reach Redis after the submit gave up: undo it then, and never run it here.
        this.refused.add(command.id);
        write
          .then(() => this.removeJob(command.lane, command.id))
          .catch(noop)
          .finally(() => this.refused.delete(command.id));
      }),
    );
  }

  private storeJob(command: Command, revive: Job | undefined): Promise<unknown> {
    const data: JobData = { payload: command.payload, s: this.commands.live.isCallerChosen(command) ? SUBMITTER_ANY : this.engineId };
    if (revive) {
      // Whoever waited for the failed job has its failure; now this engine waits for the outcome.
      return revive.updateData(data).then(() => revive.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true }));
    }
    const policy = command.lane.config.retry;
    return this.runtimes.get(command.lane)!.queue.add(command.type, data, {
      jobId: command.id,
      attempts: (policy?.maxRetries ?? 0) + 1,
      backoff: policy ? { type: 'a3s', delay: policy.initialDelayMs } : undefined,
      removeOnComplete: true,
      // The failed set is the DLQ: terminal failures stay, the oldest evicted beyond dlqSize.
      removeOnFail: this.dlqLimit === 0 ? true : { count: this.dlqLimit },
    });
  }

  protected override async unstore(command: Command): Promise<void> {
    await this.removeJob(command.lane, command.id);
  }

  protected override abandon(command: Command, error: LaneError): void {
    const lease = this.leases.get(command);
    if (lease === undefined) return; // still fetching: place() hands the job back
    this.leases.delete(command);
    if (this.adopted.delete(command)) {
      // Its submitter still waits: another engine runs it again (handlers are idempotent).
      this.giveBackJob(command.lane, lease);
    } else {
      void this.track(this.failQuietly(lease, error.message));
    }
  }

  // ---- LaneEngine overrides -------------------------------------------------------------------

  override async submit(laneId: string, spec: CommandSpec): Promise<CommandHandle> {
    const joined = spec.id === undefined ? undefined : this.commands.live.get(spec.id);
    const handle = await super.submit(laneId, spec);
    if (joined === undefined) {
      // A new job: idle engines learn of it from this, and fetch it.
      this.signal(['w', laneId, handle.id]);
    } else {
      // Joining a foreign command this engine runs makes it a local one, whose outcome is awaited here.
      this.adopted.delete(joined);
    }
    return handle;
  }

  /**
   * Running here: its signal is aborted → 'active'. Queued in Redis (waiting, prioritized or
   * delayed), whoever submitted it: removed → 'pending', and its submitter's result rejects
   * `cancelled` (through the `r` signal when that is another engine). Running on another
   * engine, finished, or not found → 'unknown': the caller has to reach the engine that runs it.
   */
  override async cancel(commandId: string, reason?: string): Promise<'pending' | 'active' | 'unknown'> {
    const local = this.commands.live.get(commandId);
    if (local?.state === CommandState.Active) return super.cancel(commandId, reason);
    const lane = local?.lane ?? (await this.findJob(commandId, QUEUED_STATES));
    if (lane === undefined) return 'unknown';
    const state = await this.runtimes.get(lane)!.queue.getJobState(commandId);
    if (!QUEUED_STATES.has(state) || !(await this.removeJob(lane, commandId))) {
      // A fetch of this engine may have taken it meanwhile.
      return this.commands.live.get(commandId)?.state === CommandState.Active ? super.cancel(commandId, reason) : 'unknown';
    }
    const command = this.commands.live.get(commandId);
    if (command !== undefined && command.state !== CommandState.Active) this.commands.discard(command, laneErrors.cancelled(reason));
    return 'pending';
  }

  /** Counters and latencies are this engine's; `pending` is the lane's queue in Redis (waiting + prioritized). */
  override async metrics(): Promise<LaneMetrics[]> {
    const metrics = await super.metrics();
    try {
      const counts = await this.bounded(
        Promise.all(this.laneList.map((lane) => this.runtimes.get(lane)!.queue.getJobCounts('wait', 'prioritized'))),
      );
      counts.forEach((count, i) => (metrics[i]!.pending = (count.wait ?? 0) + (count.prioritized ?? 0)));
    } catch {
      // Redis away: the local view is the best there is.
    }
    return metrics;
  }

  /** Every lane's failed set, oldest first; at most dlqSize letters (each lane's set holds up to dlqSize). */
  override async deadLetters(): Promise<DeadLetter[]> {
    if (this.dlqLimit === 0) return [];
    const perLane = await this.bounded(
      Promise.all(
        this.laneList.map(async (lane) => {
          const jobs = await this.runtimes.get(lane)!.queue.getFailed(0, this.dlqLimit - 1);
          return jobs.filter((job): job is Job => job !== undefined).map((job) => toDeadLetter(job, lane.id));
        }),
      ),
    );
    return perLane
      .flat()
      .sort((a, b) => a.failedAt - b.failedAt)
      .slice(-this.dlqLimit);
  }

  override async retryDeadLetter(commandId: string): Promise<CommandHandle> {
    const found = await this.failedJob(commandId);
    if (found === undefined) throw laneErrors.deadLetterNotFound(commandId);
    const [lane, job] = found;
    this.reviving = job;
    try {
      return await this.submit(lane.id, { type: job.name, payload: (job.data as JobData).payload, id: commandId });
    } finally {
      this.reviving = undefined;
    }
  }

  override async deleteDeadLetter(commandId: string): Promise<boolean> {
    const found = await this.failedJob(commandId);
    if (found === undefined) return false;
    return this.removeJob(found[0], commandId);
  }

  // ---- Redis helpers --------------------------------------------------------------------------

  private track<T>(promise: Promise<T>): Promise<T> {
    this.inflight.add(promise);
    const done = () => this.inflight.delete(promise);
    promise.then(done, done);
    return promise;
  }

  /**
   * Rejects `unavailable` when Redis does not answer within commandTimeoutMs (calling `onExpire`),
   * or fails while the connection is down.
   */
  private bounded<T>(operation: Promise<T>, onExpire?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let expired = false;
      const timer = setTimeout(() => {
        expired = true;
        onExpire?.();
        reject(laneErrors.unavailable(this.commandTimeoutMs));
      }, this.commandTimeoutMs);
      operation.then(
        (value) => {
          clearTimeout(timer);
          if (!expired) resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          if (expired) return;
          const lost = this.producer.status !== 'ready' || CONNECTION_LOST.test(errorMessage(error));
          reject(lost ? laneErrors.unavailable(this.commandTimeoutMs) : error);
        },
      );
    });
  }

  private async removeJob(lane: LaneState<Command>, jobId: string): Promise<boolean> {
    let removed = false;
    try {
      removed = (await this.track(this.runtimes.get(lane)!.queue.remove(jobId))) === 1;
    } catch {
      // Redis away or the job is gone: nothing was removed.
    }
    // Its submitter (if another engine) rejects `cancelled`; other engines drop their hints.
    if (removed) this.signal(['r', jobId]);
    return removed;
  }

  /** Fails a running job and deletes it: a cancelled or closed command is no dead letter. */
  private async failQuietly(lease: Lease, message: string): Promise<void> {
    lease.job.opts.removeOnFail = true;
    await lease.job.moveToFailed(new UnrecoverableError(message), lease.token, false).then(
      () => this.report(lease.job, ['f', lease.job.id!, message]),
      noop,
    );
  }

  /** Puts a job this engine holds back to wait, for any engine to run. */
  private giveBackJob(lane: LaneState<Command>, lease: Lease): void {
    void this.track(
      lease.job.moveToWait(lease.token).then(() => this.signal(['w', lane.id, lease.job.id!]), noop),
    );
  }

  /** The lane whose queue holds the job in one of `states`. */
  private async findJob(jobId: string, states: Set<string>): Promise<LaneState<Command> | undefined> {
    const found = await this.bounded(
      Promise.all(this.laneList.map((lane) => this.runtimes.get(lane)!.queue.getJobState(jobId))),
    );
    const index = found.findIndex((state) => states.has(state));
    return index < 0 ? undefined : this.laneList[index];
  }

  private async failedJob(jobId: string): Promise<[LaneState<Command>, Job] | undefined> {
    const lane = await this.findJob(jobId, new Set(['failed']));
    if (lane === undefined) return undefined;
    const job = await this.runtimes.get(lane)!.queue.getJob(jobId);
    return job ? [lane, job] : undefined;
  }

  private readonly renewLocks = (): void => {
    const byLane = new Map<LaneState<Command>, Lease[]>();
    for (const [command, lease] of this.leases) {
      const list = byLane.get(command.lane);
      if (list) list.push(lease);
      else byLane.set(command.lane, [lease]);
    }
    for (const [lane, leases] of byLane) {
      void this.runtimes
        .get(lane)!
        .worker.extendJobLocks(
          leases.map((lease) => lease.job.id!),
          leases.map((lease) => lease.token),
          this.lockDurationMs,
        )
        .catch(noop);
    }
  };

  // ---- signals between engines ---------------------------------------------------------------

  /** Queues a signal for the other engines; all of one event-loop turn go out as one stream entry. */
  private signal(message: Signal): void {
    this.outbox.push(message);
    if (this.outbox.length === 1) setImmediate(this.flushSignals);
  }

  /** Signals what happened to a job when someone other than this engine may be waiting for it. */
  private report(job: Job, message: Signal): void {
    if ((job.data as JobData).s !== this.engineId) this.signal(message);
  }

  private readonly flushSignals = (): void => {
    if (this.outbox.length === 0) return;
    const batch = JSON.stringify(this.outbox);
    this.outbox = [];
    // On the consumer connection: queued while Redis is away, like the outcomes it reports.
    void this.track(
      this.consumer.xadd(this.signalsKey, 'MAXLEN', '~', SIGNALS_MAX_LEN, '*', 'from', this.engineId, 'batch', batch),
    ).catch(noop);
  };

  /** Starts reading the signals stream from its current end, then keeps reading. */
  private async openSignals(): Promise<void> {
    const last = await this.signals.xrevrange(this.signalsKey, '+', '-', 'COUNT', 1);
    this.lastSignalId = last[0]?.[0] ?? '0-0';
    this.signalsOpen = true;
    void this.readSignals();
  }

  private async readSignals(): Promise<void> {
    while (!this.closed) {
      let reply: Array<[string, Array<[string, string[]]>]> | null;
      try {
        reply = (await this.signals.call('XREAD', 'BLOCK', 0, 'STREAMS', this.signalsKey, this.lastSignalId)) as typeof reply;
      } catch {
        if (this.closed) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (reply === null) continue;
      for (const [, entries] of reply) {
        for (const [id, fields] of entries) {
          this.lastSignalId = id;
          // fields: from <engine id> batch <JSON>; this engine's own batches say nothing new to it.
          if (fields[1] !== this.engineId) for (const message of JSON.parse(fields[3]!) as Signal[]) this.onSignal(message);
        }
      }
      this.dispatch();
      // Under load, letting signals pile up between reads makes each read carry many: one round
      // trip and one dispatch pass per batch instead of per entry.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private onSignal(message: Signal): void {
    if (this.closed) return;
    switch (message[0]) {
      case 'w': {
        const lane = this.laneById.get(message[1]);
        if (lane === undefined) break;
        // Foreign work, or a local command back from elsewhere (given back, recovered from a stall).
        const state = this.commands.live.get(message[2])?.state;
        if ((state === undefined && !this.refused.has(message[2])) || state === CommandState.Elsewhere) this.hint(lane, message[2]);
        break;
      }
      case 'd': {
        const [, laneId, jobId, dueAt] = message;
        const lane = this.laneById.get(laneId);
        if (lane === undefined || this.commands.live.get(jobId)?.state === CommandState.Delayed) break; // its own retry timer brings it back
        // Nobody promotes a delayed job without a fetch on its lane, so a hint comes due with it.
        const timer = setTimeout(() => {
          this.hintTimers.delete(timer);
          this.hint(lane, jobId);
          this.dispatch();
        }, Math.max(0, dueAt - Date.now()) + REQUEUE_SLACK_MS);
        this.hintTimers.add(timer);
        break;
      }
      case 't':
        this.onTaken(message);
        break;
      default:
        this.dropHint(this.hints.get(message[1]));
        this.onFinishedElsewhere(message);
    }
  }

  /** Another engine took the job: it is no longer this engine's to fetch. */
  private onTaken(message: Taken): void {
    const jobId = message[1];
    this.dropHint(this.hints.get(jobId));
    const command = this.commands.live.get(jobId);
    if (command === undefined) return;
    if (this.fetchingItself(command)) {
      // An outcome heard meanwhile says more than this.
      if (!this.heardDuringFetch.has(jobId)) this.heardDuringFetch.set(jobId, message);
    } else if (command.state === CommandState.Pending || command.state === CommandState.Delayed) {
      this.commands.detach(command);
      command.state = CommandState.Elsewhere;
    }
  }

  private onFinishedElsewhere(message: Outcome): void {
    const jobId = message[1];
    const command = this.commands.live.get(jobId);
    if (command === undefined || command.state === CommandState.Done) return;
    if (command.state === CommandState.Active) {
      if (this.fetchingItself(command)) this.heardDuringFetch.set(jobId, message);
      return;
    }
    if (message[0] === 'c') {
      this.commands.settleElsewhere(command, { value: message[2] });
    } else if (message[0] === 'f') {
      this.commands.settleElsewhere(command, { error: remoteError(message[2]) });
    } else {
      this.commands.discard(command, laneErrors.cancelled('removed from the queue'));
    }
  }

  /** A local command granted a slot whose fetch has not answered yet. */
  private fetchingItself(command: Command): boolean {
    return command.state === CommandState.Active && !this.leases.has(command) && command.run === undefined;
  }

  /** A stall check of this engine moved the job back to wait, or failed it after too many stalls. */
  private async onStalled(lane: LaneState<Command>, jobId: string): Promise<void> {
    const { queue } = this.runtimes.get(lane)!;
    let message: Signal | undefined;
    try {
      const state = await queue.getJobState(jobId);
      if (state === 'waiting' || state === 'prioritized') message = ['w', lane.id, jobId];
      else if (state === 'failed') message = ['f', jobId, (await queue.getJob(jobId))?.failedReason ?? 'job stalled more than allowable limit'];
    } catch {
      // Redis away: the job stays where it is until someone fetches on its lane.
    }
    if (message === undefined) return;
    this.signal(message);
    this.onSignal(message);
    this.dispatch();
  }

  private hint(lane: LaneState<Command>, jobId: string): void {
    // A known hint is queued, or being fetched: that fetch settles what the job is.
    if (this.intakeStopped || this.closed || this.hints.has(jobId)) return;
    const hint = new Command(HINT_SLOT, jobId, '', undefined, lane, noop, performance.now());
    this.hints.set(jobId, hint);
    this.commands.enqueue(hint);
  }

  private dropHint(hint: Command | undefined): void {
    if (hint === undefined || hint.state === CommandState.Active) return;
    if (hint.state === CommandState.Pending) this.commands.detach(hint);
    hint.state = CommandState.Done;
    this.forgetHint(hint);
  }

  private forgetHint(hint: Command): void {
    if (this.hints.get(hint.id) === hint) this.hints.delete(hint.id);
  }

  // ---- launch ---------------------------------------------------------------------------------

  protected launch(command: Command): void {
    void this.fetchAndRun(command);
  }

  private async fetchAndRun(granted: Command): Promise<void> {
    const runtime = this.runtimes.get(granted.lane)!;
    const prefetched = runtime.prefetched;
    if (prefetched !== undefined) {
      runtime.prefetched = undefined;
      this.place(granted, prefetched.job, prefetched.token);
      return;
    }
    const token = `${this.tokenPrefix}${this.tokenSequence++}`;
    let job: Job | undefined;
    try {
      job = await this.track(runtime.worker.getNextJob(token, { block: false }));
    } catch {
      job = undefined;
    }
    this.place(granted, job, token);
  }

  /** Runs the fetched job in the slot granted to `granted`, whoever submitted it. */
  private place(granted: Command, job: Job | undefined, token: string): void {
    const lane = granted.lane;
    const isHint = granted.slot === HINT_SLOT;
    if (this.closed || granted.state !== CommandState.Active) {
      // Closed while fetching: a job of this engine's was cancelled, a foreign one goes back for others.
      if (job?.id !== undefined) {
        if (!isHint && job.id === granted.id) void this.track(this.failQuietly({ job, token }, 'engine closed'));
        else this.giveBackJob(lane, { job, token });
      }
      return;
    }
    if (job === undefined || job.id === undefined) {
      this.commands.releaseSlot(lane);
      if (isHint) {
        // The hints of this lane were stale: their jobs went to other engines.
        granted.state = CommandState.Done;
        this.forgetHint(granted);
        for (const hint of this.hints.values()) if (hint.lane === lane) this.dropHint(hint);
      } else if (this.regrant(granted)) {
        this.scheduleRefetch();
      }
      return;
    }
    this.refetchMs = REFETCH_MS;
    let command = this.commands.live.get(job.id);
    if (command === granted) {
      // Fetched what it asked for: nothing of an earlier job with this id can still apply.
      this.heardDuringFetch.delete(granted.id);
    } else if (
      command !== undefined &&
      command.lane === lane &&
      (command.state === CommandState.Pending || command.state === CommandState.Delayed || command.state === CommandState.Elsewhere)
    ) {
      this.giveBack(granted, isHint);
      this.commands.detach(command);
      command.state = CommandState.Active;
    } else if (command === undefined && !this.refused.has(job.id) && this.handlerFor(job.name) !== undefined) {
      this.dropHint(this.hints.get(job.id) !== granted ? this.hints.get(job.id) : undefined);
      this.giveBack(granted, isHint);
      command = new Command(
        this.commands.live.claimSlot(),
        job.id,
        job.name,
        (job.data as JobData).payload,
        lane,
        this.handlerFor(job.name)!,
        performance.now() - Math.max(0, Date.now() - job.timestamp),
      );
      this.adopted.add(command);
      this.commands.adopt(command);
    } else {
      // Refused at submit; or running here already, or a type this engine has no handler for:
      // another engine takes it.
      if (this.refused.has(job.id)) {
        void this.track(this.failQuietly({ job, token }, 'submit refused'));
      } else {
        // Without a `w` signal: whoever submitted the job still has it queued and fetches it, and
        // engines lacking its handler cannot pass it back and forth.
        void this.track(job.moveToWait(token).catch(noop));
      }
      this.commands.releaseSlot(lane);
      this.giveBack(granted, isHint);
      this.scheduleRefetch();
      return;
    }
    this.report(job, ['t', job.id]);
    // Attempts made elsewhere count: the retry policy spans engines.
    command.executions = job.attemptsMade;
    this.execute(command, { job, token });
  }

  /** The granted placeholder did not get its own job: a hint is done with, a local command queues again. */
  private giveBack(granted: Command, isHint: boolean): void {
    if (!isHint) {
      // The slot now belongs to the fetched job; regrant queues `granted` without releasing it.
      this.regrant(granted);
      return;
    }
    granted.state = CommandState.Done;
    this.forgetHint(granted);
  }

  /**
   * A local command's fetch came back without it: it queues again, unless another engine took or
   * finished it while the fetch was in flight (that signal was held then), which applies now.
   * Returns whether it is queued here again.
   */
  private regrant(granted: Command): boolean {
    this.commands.returnGrant(granted);
    const heard = this.heardDuringFetch.get(granted.id);
    if (heard === undefined) return true;
    this.heardDuringFetch.delete(granted.id);
    if (heard[0] === 't') this.onTaken(heard);
    else this.onFinishedElsewhere(heard);
    return false;
  }

  private scheduleRefetch(): void {
    if (this.refetchTimer !== undefined || this.closed) return;
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = undefined;
      this.dispatch();
    }, this.refetchMs);
    this.refetchMs = Math.min(REFETCH_MAX_MS, this.refetchMs * 2);
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
    const runtime = this.runtimes.get(command.lane)!;
    const prefetch = lease !== undefined && this.nextGrantIsOwnLane(command.lane);
    if (lease) {
      // BullMQ stores the return value as JSON; undefined is stored as null.
      const stored = value === undefined ? null : value;
      const next = await this.track(lease.job.moveToCompleted(stored, lease.token, prefetch)).then((next) => {
        this.report(lease.job, ['c', command.id, stored]);
        return next;
      }, noop);
      // The completion already moved the lane's next job to active, saving the fetch round trip.
      if (prefetch && Array.isArray(next) && next[0]) {
        const job = Job.fromJSON(runtime.worker as never, next[0], next[1]);
        job.token = lease.token;
        runtime.prefetched = { job, token: lease.token };
      }
    }
    this.adopted.delete(command);
    if (command.state !== CommandState.Done) this.commands.completed(command, value); // unless closed meanwhile
    const unused = runtime.prefetched;
    if (unused !== undefined) {
      // The freed slot went elsewhere after all: the job goes back for the next fetch.
      runtime.prefetched = undefined;
      this.giveBackJob(command.lane, unused);
    }
  }

  /**
   * Whether the slot this lane frees will go to the lane again: it has work and is the only lane
   * with any, without a rate limit or pause that could hold it back. Only then may the completion
   * fetch the lane's next job, or the gate's choice between lanes would be bypassed.
   */
  private nextGrantIsOwnLane(lane: LaneState<Command>): boolean {
    if (lane.pending === 0 || lane.paused || lane.bucket !== undefined || this.closed) return false;
    for (const other of this.laneList) if (other !== lane && other.pending !== 0) return false;
    return true;
  }

  protected async onFailure(command: Command, run: Execution, error: unknown, timedOut: boolean): Promise<void> {
    if (command.run !== run) return;
    command.run = undefined;
    clearTimeout(command.timer);
    const retrying = this.commands.retrying(command);
    const lease = this.leases.get(command);
    this.leases.delete(command);
    /** The signal of a retry BullMQ has scheduled. */
    let retry: Signal | undefined;
    if (lease) {
      if (command.cancelRequested) {
        await this.track(this.failQuietly(lease, errorMessage(error)));
      } else if (retrying) {
        // BullMQ decides the same way (attempts = maxRetries + 1, same backoff).
        const asError = error instanceof Error ? error : new Error(errorMessage(error));
        await this.track(lease.job.moveToFailed(asError, lease.token, false)).then(() => {
          const delayMs = retryDelayMs(command.lane.config.retry!, command.executions);
          retry = delayMs === 0 ? ['w', command.lane.id, command.id] : ['d', command.lane.id, command.id, Date.now() + delayMs];
          this.report(lease.job, retry);
        }, noop);
      } else {
        const message = errorMessage(error);
        await this.track(lease.job.moveToFailed(new UnrecoverableError(message), lease.token, false)).then(
          () => this.report(lease.job, ['f', command.id, message]),
          noop,
        );
      }
    }
    const adopted = this.adopted.delete(command);
    if (command.state === CommandState.Done) return;
    this.commands.failedAttempt(command, error, timedOut, retrying);
    if (adopted && retrying) {
      // Its retry is anyone's, like its submitter's: were it kept here waiting to fetch it, nothing
      // would tell this engine if another took it (no engine reports taking its own job).
      this.commands.forget(command);
      if (retry !== undefined) this.onSignal(retry);
    }
  }
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

/**
 * The error a submitter's result rejects with when its command failed on another engine: only the
 * message crosses Redis, so the engine's own cancel and timeout errors are rebuilt from it.
 */
function remoteError(message: string): Error {
  if (message.startsWith('Command cancelled')) return new LaneError('cancelled', message);
  if (message.startsWith('Command timed out after')) return new LaneError('timeout', message);
  return new Error(message);
}
