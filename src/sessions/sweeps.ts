import type { Logger } from 'pino';
import { AsmError } from '../errors/kinds.js';
import type { Cluster } from '../nodes/cluster.js';
import type { Store } from '../store/types.js';
import type { CommandBus } from './commands.js';
import type { RunRecorder } from './recorder.js';

/** Expired approvals handled per sweep; the rest wait for the next one. */
const SWEEP_BATCH = 100;

export interface SweeperDeps {
  store: Store;
  cluster: Cluster;
  recorder: RunRecorder;
  commands: CommandBus;
  /** How often to sweep (ASM_SWEEP_MS). */
  sweepMs: number;
  log: Logger;
}

/**
 * The periodic work that has no request behind it: approval deadlines, and in distributed mode the
 * fencing of this process's runs after a heartbeat lapse and the end of runs whose owner died. Any
 * process may sweep; the store and claims make each outcome happen once.
 *
 * Node maintenance goes through the `system` lane (SPEC §8) as a `node.sweep` command, and each
 * expired approval's denial through `control`, as every decision. Two parts stay on this process's
 * timer, deliberately: fencing its own runs (a lane job may run on another process in distributed
 * mode) and the heartbeat (nodes/redis.ts): it says this process is alive, so it must neither run
 * elsewhere nor wait behind other work, and it must go on while the engine drains.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;

  constructor(private readonly deps: SweeperDeps) {}

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.deps.sweepMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One sweep, as the timer runs it: this process's fencing, then node.sweep on the system lane. */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      if (this.deps.cluster.distributed) await this.deps.recorder.fenceLostRuns();
      await this.deps.commands.call('system', 'node.sweep', {});
    } catch (err) {
      if (!(err instanceof AsmError && err.kind === 'shutting_down')) this.deps.log.warn({ err }, 'sweep failed; retrying on the next one');
    } finally {
      this.sweeping = false;
    }
  }

  /** The system lane's node.sweep: what any process may do for the deployment. */
  async maintain(): Promise<null> {
    await this.expireApprovals();
    if (this.deps.cluster.distributed) await this.endOrphans();
    return null;
  }

  private async expireApprovals(): Promise<void> {
    const { store, commands, log } = this.deps;
    for (const approval of await store.approvals.listExpired(Date.now(), SWEEP_BATCH)) {
      await commands.call('control', 'approval.decide', { id: approval.id, decision: 'deny', reason: 'timeout' }).catch((err) => {
        if (!(err instanceof AsmError && err.kind === 'conflict')) log.error({ err, approvalId: approval.id }, 'approval timeout failed');
      });
    }
  }

  /**
   * Runs whose owner stopped heartbeating end with node_lost; their CLIs went down with the owner.
   * A queued run with an owner counts too: its owner took it (a worker's queue, or the instant
   * before its CLI started), and nobody else will.
   */
  private async endOrphans(): Promise<void> {
    const { store, cluster, recorder } = this.deps;
    for (const run of await store.runs.listUnfinished()) {
      if (run.owner === null || run.owner === cluster.self) continue;
      if (await cluster.isAlive(run.owner)) continue;
      await recorder.endOrphan(run);
    }
  }
}
