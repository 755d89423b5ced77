import { checkSurface, type SshGrant } from '../backends/surfaces.js';
import type { SdkLoader } from '../backends/sdk-loader.js';
import { badField } from '../errors/kinds.js';
import type { LaneEngine } from '../lanes/types.js';
import type { ProviderDefinition } from '../providers/types.js';
import type { ExecutionSurface } from '../schemas/api.js';
import type { EventMetadata } from '../schemas/events.js';
import { needsSdkProbe, resolveBackend, type ExecutionMode, type RequestedBackend } from './backend-resolution.js';

export interface PlacementDeps {
  engine: LaneEngine;
  sdks: SdkLoader;
  /** Whether this deployment has worker nodes for remote_node runs (distributed mode). */
  remoteAvailable: boolean;
  nodeName: string;
  /** The hosts the operator lets runs ssh to, and the only directory of their key files. */
  ssh: SshGrant;
  /** Lanes that may carry runs (lanes/policies.ts runLanes). */
  runLanes: ReadonlySet<string>;
}

/**
 * Where a run executes: its queue lane, its backend and its execution surface, each checked where
 * it is chosen (at session creation and again at each run), so a session that could never run is
 * refused at once.
 */
export class Placement {
  constructor(private readonly deps: PlacementDeps) {}

  /** The backend and observability fields of a run, with the provider's SDK probed only when the request could use it. */
  async resolve(provider: ProviderDefinition, requested: RequestedBackend, executionMode: ExecutionMode, queue: string): Promise<EventMetadata> {
    const { sdks, remoteAvailable, nodeName } = this.deps;
    const sdk = needsSdkProbe(provider, requested) ? await sdks.status(provider) : null;
    return resolveBackend({ provider, requestedBackend: requested, executionMode, remoteAvailable, sdk, node: nodeName, queue });
  }

  assertQueue(queue: string): void {
    const lanes = this.deps.engine.lanes();
    if (!lanes.some((l) => l.id === queue)) {
      throw badField('queue', `unknown queue lane "${queue}"; lanes: ${lanes.map((l) => l.id).join(', ')}`);
    }
  }

  /**
   * The queue of a session or a run: a lane that exists and carries runs. The service's own lanes
   * (system, control, session, query) are refused, so no run can take the slots interrupts and
   * approval decisions need.
   */
  assertRunQueue(queue: string): void {
    this.assertQueue(queue);
    const { runLanes, engine } = this.deps;
    if (!runLanes.has(queue)) {
      const open = engine.lanes().filter((l) => runLanes.has(l.id)).map((l) => l.id);
      throw badField('queue', `lane "${queue}" does not carry runs; run lanes: ${open.join(', ')}`);
    }
  }

  /**
   * A session's or run's execution surface: its fields, the operator's host allowlist, its files
   * (only when the CLI starts on this process; a remote_node run's worker checks them), and a
   * backend that spawns a CLI.
   */
  assertSurface(surface: ExecutionSurface, executionMode: ExecutionMode, placed: EventMetadata): void {
    checkSurface(surface, 'execution_surface', this.deps.ssh, executionMode === 'local');
    if (surface.kind !== 'local_subprocess' && placed.backend === 'sdk') {
      throw badField('execution_surface', `kind ${surface.kind} needs the core lane: the sdk lane runs the agent inside this process`);
    }
  }
}
