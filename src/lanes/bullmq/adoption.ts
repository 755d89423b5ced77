import { performance } from 'node:perf_hooks';
import type { Job } from 'bullmq';
import { Command } from '../command.js';
import type { CommandLifecycle } from '../command-lifecycle.js';
import { CommandState } from '../command-state.js';
import { laneErrors, noop } from '../errors.js';
import type { LaneState } from '../lane-state.js';
import { LaneError, type CommandHandler } from '../types.js';
import { REQUEUE_SLACK_MS, type JobData, type LaneJobs, type Lease } from './jobs.js';
import type { Outcome, Signal, Taken } from './signals.js';

/** After a fetch finds nothing for local work, dispatch tries again after this, doubling up to the cap. */
const REFETCH_MS = 10;
const REFETCH_MAX_MS = 500;
/** A hint is a Command that owns no slot of the engine's command index. */
const HINT_SLOT = -1;

/** What adoption needs of its engine besides the command lifecycle and the jobs. */
export interface AdoptionHost {
  isClosed(): boolean;
  lanes: ReadonlyMap<string, LaneState<Command>>;
  handlerFor(type: string): CommandHandler | undefined;
  /** Runs a command that now holds `lease`, in the slot it was granted. */
  execute(command: Command, lease: Lease): void;
  dispatch(): void;
}

/**
 * Which job an engine runs, when any engine may run any job (src/lanes/README.md, "The distributed
 * model"). The gate's queues hold this engine's own commands and *hints*: placeholder commands for
 * jobs other engines submitted, learnt from signals. A granted slot fetches whatever job Redis hands
 * out next on its lane, and `place` decides what that job is here: the granted command itself,
 * another local command, a foreign job to *adopt* (register under its id while it runs here), or
 * one to put back. Signals from other engines move local commands to `Elsewhere` and settle them.
 */
export class Adoption {
  /** Foreign jobs known to wait, by job id. */
  private readonly hints = new Map<string, Command>();
  /** Commands this engine runs for another engine's submit. */
  private readonly adopted = new Set<Command>();
  /**
   * Signals (taken, or an outcome) for local commands whose own fetch was in flight: another engine
   * took the job meanwhile. Applied when that fetch comes back without it (see `regrant`).
   */
  private readonly heardDuringFetch = new Map<string, Taken | Outcome>();
  /**
   * Commands submitted here whose slot was granted at once: their `w` signal waits on their fetch
   * and goes out only if that fetch comes back without them (see `announce`).
   */
  private readonly unannounced = new Set<Command>();
  private readonly hintTimers = new Set<NodeJS.Timeout>();
  private intakeStopped = false;
  private refetchTimer: NodeJS.Timeout | undefined;
  private refetchMs = REFETCH_MS;

  constructor(
    private readonly commands: CommandLifecycle,
    private readonly jobs: LaneJobs,
    private readonly host: AdoptionHost,
  ) {}

  /** Stops taking other engines' jobs: once this engine stops taking work, they are theirs to finish. */
  stopIntake(): void {
    this.intakeStopped = true;
    for (const hint of this.hints.values()) this.dropHint(hint);
  }

  stopTimers(): void {
    clearTimeout(this.refetchTimer);
    for (const timer of this.hintTimers) clearTimeout(timer);
    this.hintTimers.clear();
  }

  /**
   * Whether the command ran here for another engine's submit; from then on it is this engine's own
   * (a local submit joined it) or nobody's (it finished).
   */
  disown(command: Command): boolean {
    return this.adopted.delete(command);
  }

  /** Queues a placeholder for another engine's waiting job. */
  hint(lane: LaneState<Command>, jobId: string): void {
    // A known hint is queued, or being fetched: that fetch settles what the job is.
    if (this.intakeStopped || this.host.isClosed() || this.hints.has(jobId)) return;
    const hint = new Command(HINT_SLOT, jobId, '', undefined, lane, noop, performance.now());
    this.hints.set(jobId, hint);
    this.commands.enqueue(hint);
  }

  /**
   * Tells idle engines of a job just submitted here, so they may fetch it: unless this engine is
   * fetching it already (a slot was free at its submit), then only if that fetch does not get it.
   * A `w` for a job its submitter takes at once only woke every engine's read, its own included, and
   * sent the others after a job that was gone (bench/RESULTS.md, twenty-eighth pass).
   */
  announce(command: Command): void {
    if (this.fetchingItself(command)) this.unannounced.add(command);
    else if (command.state === CommandState.Pending) this.jobs.announce(command.lane, command.id);
  }

  // ---- signals --------------------------------------------------------------------------------

  onSignal(message: Signal): void {
    if (this.host.isClosed()) return;
    switch (message[0]) {
      case 'w': {
        const lane = this.host.lanes.get(message[1]);
        if (lane === undefined) break;
        // Foreign work, or a local command back from elsewhere (given back, recovered from a stall).
        const state = this.commands.live.get(message[2])?.state;
        if ((state === undefined && !this.jobs.isRefused(message[2])) || state === CommandState.Elsewhere) this.hint(lane, message[2]);
        break;
      }
      case 'd': {
        const [, laneId, jobId, dueAt] = message;
        const lane = this.host.lanes.get(laneId);
        if (lane === undefined || this.commands.live.get(jobId)?.state === CommandState.Delayed) break; // its own retry timer brings it back
        // Nobody promotes a delayed job without a fetch on its lane, so a hint comes due with it.
        const timer = setTimeout(() => {
          this.hintTimers.delete(timer);
          this.hint(lane, jobId);
          this.host.dispatch();
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
  fetchingItself(command: Command): boolean {
    return command.state === CommandState.Active && !this.jobs.holds(command) && command.run === undefined;
  }

  // ---- placing a fetched job ------------------------------------------------------------------

  /** Runs the fetched job in the slot granted to `granted`, whoever submitted it. */
  place(granted: Command, job: Job | undefined, token: string): void {
    const lane = granted.lane;
    const isHint = granted.slot === HINT_SLOT;
    if (this.host.isClosed() || granted.state !== CommandState.Active) {
      this.unannounced.delete(granted);
      // Closed while fetching: a job of this engine's was cancelled, a foreign one goes back for others.
      if (job?.id !== undefined) {
        if (!isHint && job.id === granted.id) void this.jobs.failQuietly({ job, token }, 'engine closed');
        else this.jobs.giveBack(lane, { job, token });
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
    // Taking a job no other engine was told of tells them nothing.
    let announced = true;
    if (command === granted) {
      // Fetched what it asked for: nothing of an earlier job with this id can still apply.
      this.heardDuringFetch.delete(granted.id);
      announced = !this.unannounced.delete(granted);
    } else if (
      command !== undefined &&
      command.lane === lane &&
      (command.state === CommandState.Pending || command.state === CommandState.Delayed || command.state === CommandState.Elsewhere)
    ) {
      this.giveBack(granted, isHint);
      this.commands.detach(command);
      command.state = CommandState.Active;
    } else if (command === undefined && !this.jobs.isRefused(job.id) && this.host.handlerFor(job.name) !== undefined) {
      this.dropHint(this.hints.get(job.id) !== granted ? this.hints.get(job.id) : undefined);
      this.giveBack(granted, isHint);
      command = new Command(
        this.commands.live.claimSlot(),
        job.id,
        job.name,
        (job.data as JobData).payload,
        lane,
        this.host.handlerFor(job.name)!,
        performance.now() - Math.max(0, Date.now() - job.timestamp),
      );
      this.adopted.add(command);
      this.commands.adopt(command);
    } else {
      // Refused at submit; or running here already, or a type this engine has no handler for:
      // another engine takes it.
      if (this.jobs.isRefused(job.id)) {
        void this.jobs.failQuietly({ job, token }, 'submit refused');
      } else {
        // Without a `w` signal: whoever submitted the job still has it queued and fetches it, and
        // engines lacking its handler cannot pass it back and forth.
        this.jobs.putBack({ job, token });
      }
      this.commands.releaseSlot(lane);
      this.giveBack(granted, isHint);
      this.scheduleRefetch();
      return;
    }
    if (announced) this.jobs.report(job, ['t', job.id]);
    // Attempts made elsewhere count: the retry policy spans engines.
    command.executions = job.attemptsMade;
    this.host.execute(command, { job, token });
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
   * Queued again, its job is announced if its submit did not. Returns whether it is queued here again.
   */
  private regrant(granted: Command): boolean {
    this.commands.returnGrant(granted);
    const unannounced = this.unannounced.delete(granted);
    const heard = this.heardDuringFetch.get(granted.id);
    if (heard === undefined) {
      if (unannounced) this.jobs.announce(granted.lane, granted.id);
      return true;
    }
    this.heardDuringFetch.delete(granted.id);
    if (heard[0] === 't') this.onTaken(heard);
    else this.onFinishedElsewhere(heard);
    return false;
  }

  private scheduleRefetch(): void {
    if (this.refetchTimer !== undefined || this.host.isClosed()) return;
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = undefined;
      this.host.dispatch();
    }, this.refetchMs);
    this.refetchMs = Math.min(REFETCH_MAX_MS, this.refetchMs * 2);
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
