import type { Logger } from 'pino';
import { AsmError } from '../errors/kinds.js';
import type { Cluster } from '../nodes/cluster.js';
import type { Store } from '../store/types.js';
import type { ControlRouter } from './control.js';
import type { RunRecorder } from './recorder.js';

/** Expired approvals handled per sweep; the rest wait for the next one. */
const SWEEP_BATCH = 100;

export interface SweeperDeps {
  store: Store;
  cluster: Cluster;
  recorder: RunRecorder;
  control: ControlRouter;
  /** How often to sweep (ASM_SWEEP_MS). */
  sweepMs: number;
  log: Logger;
}

/**
 * The periodic work that has no request behind it: approval deadlines, and in distributed mode the
 * fencing of this process's runs after a heartbeat lapse and the end of runs whose owner died. Any
 * process may sweep; the store and claims make each outcome happen once.
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

  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      await this.expireApprovals();
      if (this.deps.cluster.distributed) {
        await this.deps.recorder.fenceLostRuns();
        await this.endOrphans();
      }
    } catch (err) {
      this.deps.log.warn({ err }, 'sweep failed; retrying on the next one');
    } finally {
      this.sweeping = false;
    }
  }

  private async expireApprovals(): Promise<void> {
    const { store, control, log } = this.deps;
    for (const approval of await store.approvals.listExpired(Date.now(), SWEEP_BATCH)) {
      await control.decide(approval.id, 'deny', 'timeout').catch((err) => {
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
