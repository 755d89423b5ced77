import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Job } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import type { Command, Execution } from './command.js';
import { CommandState } from './command-state.js';
import { errorMessage, laneErrors } from './errors.js';
import { freedSlotStaysIn } from './lane-choice.js';
import { LaneSchedulerCore } from './scheduler-core.js';
import type { CommandHandle, CommandSpec, DeadLetter, EngineOptions, LaneError, LaneMetrics } from './types.js';
import { Adoption } from './bullmq/adoption.js';
import { LaneJobs, QUEUED_STATES, REQUEUE_SLACK_MS, SUBMITTER_ANY, type JobData, type Lease } from './bullmq/jobs.js';
import { connect, RedisCalls } from './bullmq/redis-calls.js';
import { SignalStream, type Signal } from './bullmq/signals.js';

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

/**
 * The BullMQ lane engine: the shared scheduler (scheduler-core.ts) with the commands held in Redis,
 * shared by every engine on the same Redis, prefix and lanes. See src/lanes/README.md ("BullMQ
 * engine") for the distributed model. This class wires the parts to the scheduler:
 *
 * - `LaneJobs` (bullmq/jobs.ts): a BullMQ Queue and manual-mode Worker per lane, and every job
 *   operation; a command is a job named by its type, with job id = command id.
 * - `SignalStream` (bullmq/signals.ts): what engines tell each other about jobs.
 * - `Adoption` (bullmq/adoption.ts): hints of other engines' jobs, and what a fetched job is here.
 * - `RedisCalls` (bullmq/redis-calls.ts): writes in flight and the timeout guard.
 *
 * A granted slot fetches the lane's next job and runs it, whoever submitted it; a command submitted
 * here but run by another engine is `Elsewhere` until that engine signals its outcome. Terminal
 * failures stay in BullMQ's failed set, which is the DLQ every engine reads.
 */
export class BullMQLaneEngine extends LaneSchedulerCore {
  private readonly engineId = randomUUID();
  /** Queue operations (submit, cancel, metrics, DLQ): fail fast while Redis is away. */
  private readonly producer: Redis;
  /** Fetches and outcomes: queued while Redis is away, so running handlers can finish. */
  private readonly consumer: Redis;
  private readonly calls: RedisCalls;
  private readonly signals: SignalStream;
  private readonly jobs: LaneJobs;
  private readonly adoption: Adoption;
  private starting: Promise<void> | undefined;
  /** Set by retryDeadLetter for the submit it makes: that submit revives the failed job instead of adding one. */
  private reviving: Job | undefined;

  constructor(options: BullMQEngineOptions) {
    super(options, {
      // Grants only start fetches, so a pass never runs handlers and needs no burst limit.
      burst: Infinity,
      // A zero delay went straight back to BullMQ's wait list; a positive one is due just after it.
      requeueSlackMs: REQUEUE_SLACK_MS,
      // The failed set in Redis is the DLQ; nothing is kept in memory.
      keepsDeadLetters: false,
    });
    const { connection, redisOptions } = options;
    this.producer = connect(connection, redisOptions, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    this.consumer = connect(connection, redisOptions, { maxRetriesPerRequest: null });
    const commandTimeoutMs = options.commandTimeoutMs ?? 5_000;
    this.calls = new RedisCalls(this.producer, commandTimeoutMs);
    const prefix = options.prefix ?? '{asm}';
    this.signals = new SignalStream({
      reader: connect(connection, redisOptions, { maxRetriesPerRequest: null }),
      stallMs: commandTimeoutMs,
      writer: this.consumer,
      // BullMQ's keys are `<prefix>:<queue>:<suffix>` and a lane id is never empty: no clash.
      key: `${prefix}::signals`,
      engineId: this.engineId,
      calls: this.calls,
      onSignal: (message) => this.adoption.onSignal(message),
      afterRead: () => this.dispatch(),
    });
    this.jobs = new LaneJobs(this.laneList, {
      prefix,
      lockDurationMs: options.lockDurationMs ?? 30_000,
      stalledIntervalMs: options.stalledIntervalMs ?? 30_000,
      maxStalledCount: options.maxStalledCount ?? 1,
      dlqSize: options.dlqSize ?? 0,
      engineId: this.engineId,
      producer: this.producer,
      consumer: this.consumer,
      calls: this.calls,
      signals: this.signals,
      onStalled: (message) => {
        this.adoption.onSignal(message);
        this.dispatch();
      },
    });
    this.adoption = new Adoption(this.commands, this.jobs, {
      isClosed: () => this.closed,
      lanes: this.laneById,
      handlerFor: (type) => this.handlerFor(type),
      execute: (command, lease) => this.execute(command, lease),
      dispatch: () => this.dispatch(),
    });
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  override start(): Promise<void> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    if (this.closed) return;
    await this.signals.ready;
    await Promise.all(
      this.laneList.map(async (lane) => {
        // Jobs that were queued before this engine listened get hints now; later ones by signal.
        const queued = await this.jobs.start(lane);
        for (const id of queued) if (this.commands.live.get(id) === undefined) this.adoption.hint(lane, id);
      }),
    );
    this.jobs.startLockRenewal();
    await super.start();
  }

  override async shutdown(): Promise<void> {
    this.adoption.stopIntake();
    await super.shutdown();
  }

  protected override async teardown(): Promise<void> {
    this.adoption.stopTimers();
    this.jobs.stopLockRenewal();
    this.signals.stop();
    // Outcomes, removals and their signals get their chance to reach Redis, but a Redis that is away
    // cannot hold close() up.
    await this.calls.settleInflight();
    this.signals.flush();
    await this.calls.settleInflight();
    this.signals.disconnect();
    await this.jobs.close();
    for (const client of [this.producer, this.consumer]) client.disconnect();
  }

  // ---- store hooks ----------------------------------------------------------------------------

  protected override persist(command: Command): Promise<unknown> {
    const revive = this.reviving?.id === command.id ? this.reviving : undefined;
    // Signals about the job must not come before the point the reader starts from.
    const write = this.signals.isOpen ? this.storeJob(command, revive) : this.signals.ready.then(() => this.storeJob(command, revive));
    return this.jobs.guardAdd(command, write);
  }

  private storeJob(command: Command, revive: Job | undefined): Promise<unknown> {
    return this.jobs.add(command, this.commands.live.isCallerChosen(command) ? SUBMITTER_ANY : this.engineId, revive);
  }

  protected override async unstore(command: Command): Promise<void> {
    await this.jobs.remove(command.lane, command.id);
  }

  protected override abandon(command: Command, error: LaneError): void {
    const lease = this.jobs.release(command);
    if (lease === undefined) return; // still fetching: place() hands the job back
    if (this.adoption.disown(command)) {
      // Its submitter still waits: another engine runs it again (handlers are idempotent).
      this.jobs.giveBack(command.lane, lease);
    } else {
      void this.jobs.failQuietly(lease, error.message);
    }
  }

  // ---- LaneEngine overrides -------------------------------------------------------------------

  override async submit(laneId: string, spec: CommandSpec): Promise<CommandHandle> {
    const joined = spec.id === undefined ? undefined : this.commands.live.get(spec.id);
    if (joined !== undefined && this.awaitsItsJob(joined) && (await this.jobs.state(joined.lane, joined.id)) === 'unknown') {
      // Redis no longer has its job (it restarted without its last writes: appendfsync everysec), so
      // nothing would ever fetch it: its job is stored again, and this submit joins it (found by
      // test/faults/redis-aof-restart.test.ts, where such a run stayed queued for good).
      await this.persist(joined);
      this.jobs.announce(joined.lane, joined.id);
    }
    const handle = await super.submit(laneId, spec);
    if (joined === undefined) {
      // A new job: idle engines learn of it, unless this engine's fetch takes it first.
      const command = this.commands.live.get(handle.id);
      if (command !== undefined) this.adoption.announce(command);
    } else {
      // Joining a foreign command this engine runs makes it a local one, whose outcome is awaited here.
      this.adoption.disown(joined);
    }
    return handle;
  }

  /** Queued here, or granted a slot and still fetching: it runs only once a fetch finds its job. */
  private awaitsItsJob(command: Command): boolean {
    return command.state === CommandState.Pending || this.adoption.fetchingItself(command);
  }

  /**
   * Running here: its signal is aborted → 'active'. Queued in Redis (waiting, prioritized or
   * delayed), whoever submitted it: removed → 'pending', and its submitter's result rejects
   * `cancelled` (through the `r` signal when that is another engine). Running on another
   * engine, finished, or not found → 'unknown': the caller has to reach the engine that runs it.
   */
  override async cancel(commandId: string, reason?: string): Promise<'pending' | 'active' | 'unknown'> {
    const live = this.commands.live;
    const local = live.get(commandId);
    if (local?.state === CommandState.Active) return super.cancel(commandId, reason);
    const lane = local?.lane ?? (await this.jobs.find(commandId, QUEUED_STATES));
    if (lane === undefined) return 'unknown';
    const state = await this.jobs.state(lane, commandId);
    if (!QUEUED_STATES.has(state) || !(await this.jobs.remove(lane, commandId))) {
      // A fetch of this engine may have taken it meanwhile.
      return live.get(commandId)?.state === CommandState.Active ? super.cancel(commandId, reason) : 'unknown';
    }
    const command = live.get(commandId);
    if (command !== undefined && command.state !== CommandState.Active) this.commands.discard(command, laneErrors.cancelled(reason));
    return 'pending';
  }

  /** Counters and latencies are this engine's; `pending` is the lane's queue in Redis (waiting + prioritized). */
  override async metrics(): Promise<LaneMetrics[]> {
    const metrics = await super.metrics();
    try {
      const pending = await this.jobs.pendingCounts();
      pending.forEach((count, i) => (metrics[i]!.pending = count));
    } catch {
      // Redis away: the local view is the best there is.
    }
    return metrics;
  }

  override deadLetters(): Promise<DeadLetter[]> {
    return this.jobs.deadLetters();
  }

  override async retryDeadLetter(commandId: string): Promise<CommandHandle> {
    const found = await this.jobs.failed(commandId);
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
    const found = await this.jobs.failed(commandId);
    if (found === undefined) return false;
    return this.jobs.remove(found[0], commandId);
  }

  // ---- running --------------------------------------------------------------------------------

  protected launch(command: Command): void {
    void this.fetchAndRun(command);
  }

  private async fetchAndRun(granted: Command): Promise<void> {
    const prefetched = this.jobs.takePrefetched(granted.lane);
    if (prefetched !== undefined) {
      this.adoption.place(granted, prefetched.job, prefetched.token);
      return;
    }
    const token = this.jobs.token();
    let job: Job | undefined;
    try {
      job = await this.jobs.fetch(granted.lane, token);
    } catch {
      job = undefined;
    }
    this.adoption.place(granted, job, token);
  }

  private execute(command: Command, lease: Lease): void {
    this.jobs.hold(command, lease);
    const run = this.begin(command);
    if (command.cancelRequested) run.abort(laneErrors.cancelled());
    this.invoke(command, run);
  }

  // ---- outcomes -------------------------------------------------------------------------------

  // The run is detached before the Redis write, so that a timeout or a second outcome arriving
  // meanwhile is stale; the slot is held until BullMQ has acknowledged the outcome.

  protected async onSuccess(command: Command, run: Execution, value: unknown): Promise<void> {
    if (command.run !== run) return;
    const lane = command.lane;
    lane.latency.record(performance.now() - run.startedAt);
    command.run = undefined;
    clearTimeout(command.timer);
    const lease = this.jobs.release(command);
    if (lease) {
      // Only when the gate would give the freed slot to this lane anyway may the completion fetch
      // the lane's next job (saving the fetch round trip); otherwise the choice between lanes is bypassed.
      const prefetch = !this.closed && freedSlotStaysIn(this.laneList, lane);
      // BullMQ stores the return value as JSON; undefined is stored as null.
      const next = await this.jobs.complete(lane, lease, value === undefined ? null : value, prefetch);
      if (next !== undefined) this.jobs.keepPrefetched(lane, next);
    }
    this.adoption.disown(command);
    if (command.state !== CommandState.Done) this.commands.completed(command, value); // unless closed meanwhile
    const unused = this.jobs.takePrefetched(lane);
    // The freed slot went elsewhere after all: the job goes back for the next fetch.
    if (unused !== undefined) this.jobs.giveBack(lane, unused);
  }

  protected async onFailure(command: Command, run: Execution, error: unknown, timedOut: boolean): Promise<void> {
    if (command.run !== run) return;
    command.run = undefined;
    clearTimeout(command.timer);
    const retrying = this.commands.retrying(command, error);
    const lease = this.jobs.release(command);
    /** The signal of a retry BullMQ has scheduled. */
    let retry: Signal | undefined;
    if (lease) {
      if (command.cancelRequested) await this.jobs.failQuietly(lease, errorMessage(error));
      else if (retrying) retry = await this.jobs.retryLater(lease, command, error);
      else await this.jobs.fail(lease, errorMessage(error));
    }
    const adopted = this.adoption.disown(command);
    if (command.state === CommandState.Done) return;
    this.commands.failedAttempt(command, error, timedOut, retrying);
    if (adopted && retrying) {
      // Its retry is anyone's, like its submitter's: were it kept here waiting to fetch it, nothing
      // would tell this engine if another took it (no engine reports taking its own job).
      this.commands.forget(command);
      if (retry !== undefined) this.adoption.onSignal(retry);
    }
  }
}
