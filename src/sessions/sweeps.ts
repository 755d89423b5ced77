import type { Logger } from 'pino';
import { AsmError } from '../errors/kinds.js';
import type { Cluster } from '../nodes/cluster.js';
import { isTerminalRunState } from '../schemas/api.js';
import type { RunRecord, Store } from '../store/types.js';
import type { ActiveRuns } from './active-runs.js';
import { isUnstartedCommand, type CommandBus } from './commands.js';
import type { RunRecorder } from './recorder.js';

/** Expired approvals handled per sweep; the rest wait for the next one. */
const SWEEP_BATCH = 100;

export interface SweeperDeps {
  store: Store;
  cluster: Cluster;
  recorder: RunRecorder;
  commands: CommandBus;
  /** The runs this process executes. */
  active: ActiveRuns;
  /** The runs whose lane command executes in this process now (RunExecutor.executing), active or not yet. */
  executing: ReadonlySet<string>;
  /** How often to sweep (ASM_SWEEP_MS). */
  sweepMs: number;
  /**
   * A worker's sweep fences its own runs only: the deployment-wide work goes through the control and
   * system lanes, which its engine does not have (app.ts), and the API processes do it.
   */
  ownRunsOnly: boolean;
  log: Logger;
}

/**
 * The periodic work that has no request behind it: approval deadlines, and in distributed mode the
 * fencing of this process's runs after a heartbeat lapse and the end of runs whose owner died. Any
 * API process may sweep; the store and claims make each outcome happen once. A worker fences its own.
 *
 * Each expired approval's denial goes through the `control` lane, as every decision, and ending the
 * runs of a lost node (node maintenance) through the `system` lane (SPEC §8), as a `node.end_lost_runs`
 * command submitted only when there are some, so an idle deployment's lanes stay quiet. Finding the
 * work, fencing this process's own runs and the heartbeat (nodes/redis.ts) stay on this process's
 * timer, deliberately: in distributed mode a lane job may run on another process, and a heartbeat,
 * which says this process is alive, must neither run elsewhere nor wait behind other work.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;
  /** A sweep found the store unreachable: the next one that reaches it reconciles first. */
  private storeWasAway = false;
  private readonly backListeners: Array<() => Promise<void>> = [];

  constructor(private readonly deps: SweeperDeps) {}

  /** Called once the store answers again after a sweep found it unreachable (admission hands lost queued runs over again). */
  onStoreBack(listener: () => Promise<void>): void {
    this.backListeners.push(listener);
  }

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.deps.sweepMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const { cluster, ownRunsOnly } = this.deps;
      if (this.storeWasAway) await this.reconcile();
      if (!ownRunsOnly) await this.expireApprovals();
      if (cluster.distributed) {
        await this.deps.recorder.fenceLostRuns();
        if (ownRunsOnly) return;
        const lost = await this.lostRuns();
        if (lost.length > 0) await this.deps.commands.call('system', 'node.end_lost_runs', { run_ids: lost });
      }
    } catch (err) {
      // not_ready is the store's outage, unless a lane did not start the command (a paused lane).
      if (err instanceof AsmError && err.kind === 'not_ready' && !isUnstartedCommand(err)) this.storeWasAway = true;
      if (!(err instanceof AsmError && err.kind === 'shutting_down')) this.deps.log.warn({ err }, 'sweep failed; retrying on the next one');
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * The system lane's node.end_lost_runs: runs whose owner stopped heartbeating end with node_lost;
   * their CLIs went down with the owner. Each is checked again here, where the command runs.
   */
  async endLostRuns(runIds: readonly string[]): Promise<null> {
    const { store, recorder } = this.deps;
    for (const id of runIds) {
      const run = await store.runs.get(id);
      if (run && !isTerminalRunState(run.state) && (await this.ownerLost(run))) await recorder.endOrphan(run);
    }
    return null;
  }

  /**
   * The store is back after an outage. Writes refused meanwhile, and with `appendfsync everysec` the
   * last second of writes Redis acknowledged before it crashed (README "Distributed mode"), may be
   * missing. Each run executing here is checked against its record again, and one the store no longer
   * gives this process is stopped and written no more (RunRecorder.recheckOwnership); a run the store
   * says this process took but that no lane command of it executes had its writes lost or refused, and ends now
   * (running: its end was lost; queued: its owner write landed while its answer, or what followed, did
   * not, so whether its CLI started is unknown, and a run is never started twice). So does a run this
   * process stopped here because its record no longer names it while no other process took it: its
   * owner write was lost while its later writes landed (they were retried until Redis came back), so
   * the store says it runs, or waits, with no owner, and nobody else would ever end it (found by
   * test/faults/redis-aof-restart.test.ts); one stopped later, at its next write, is ended where it is
   * stopped (RunRecorder.stillOwned). The listeners hand queued runs over again. Done before
   * anything else, once per outage.
   */
  private async reconcile(): Promise<void> {
    const { store, recorder, log } = this.deps;
    await recorder.recheckOwnership();
    for (const run of await store.runs.listUnfinished()) if (this.lostHere(run)) await recorder.endLostEnd(run);
    for (const listener of this.backListeners) await listener();
    this.storeWasAway = false;
    log.info('the store is back after an outage; runs it may have lost writes of are reconciled');
  }

  /** Whether this process must end `run` after an outage (reconcile): nobody else would. */
  private lostHere(run: RunRecord): boolean {
    const self = this.deps.cluster.self;
    const here = this.deps.active.get(run.id);
    // Not held here, yet taken by this process: its writes were lost or refused; unless its lane
    // command executes here, which took it and has not started it yet (or ends it itself).
    if (here === undefined) return run.owner === self && !this.deps.executing.has(run.id);
    // Held here, stopped (fenced) while its record names this process or nobody. One held back for its
    // lane's retry (startFailure) is not lost: its lane tries it again.
    return here.ended && here.startFailure === undefined && (run.owner === null || run.owner === self);
  }

  private async expireApprovals(): Promise<void> {
    const { store, commands, log } = this.deps;
    for (const approval of await store.approvals.listExpired(this.deps.cluster.now(), SWEEP_BATCH)) {
      await commands.call('control', 'approval.decide', { id: approval.id, decision: 'deny', reason: 'timeout' }).catch((err) => {
        if (!(err instanceof AsmError && err.kind === 'conflict')) log.error({ err, approvalId: approval.id }, 'approval timeout failed');
      });
    }
  }

  /**
   * Runs whose owner stopped heartbeating. A queued run with an owner counts too: its owner took it
   * (a worker's queue, or the instant before its CLI started), and nobody else will. Only owned runs
   * are read: reading every unfinished run at each sweep kept a server with thousands of queued runs
   * busy at 100% of a core while idle (bench/RESULTS.md issue 14).
   */
  private async lostRuns(): Promise<string[]> {
    const lost: string[] = [];
    for (const run of await this.deps.store.runs.listOwnedUnfinished()) if (await this.ownerLost(run)) lost.push(run.id);
    return lost;
  }

  private async ownerLost(run: RunRecord): Promise<boolean> {
    const { cluster } = this.deps;
    return run.owner !== null && run.owner !== cluster.self && !(await cluster.isAlive(run.owner));
  }
}
