import { checkSurface, type SshGrant } from '../backends/surfaces.js';
import type { SdkLoader } from '../backends/sdk-loader.js';
import { badField } from '../errors/kinds.js';
import type { LaneEngine } from '../lanes/types.js';
import type { Cluster } from '../nodes/cluster.js';
import { remoteTarget } from '../nodes/remote-options.js';
import { cliNotFound, findBinary, resolveBinary } from '../providers/registry.js';
import type { ProviderDefinition } from '../providers/types.js';
import type { ExecutionSurface } from '../schemas/api.js';
import type { EventMetadata } from '../schemas/events.js';
import { needsSdkProbe, resolveBackend, type ExecutionMode, type RequestedBackend } from './backend-resolution.js';

export interface PlacementDeps {
  engine: LaneEngine;
  cluster: Cluster;
  /** ASM_<NAME>_BIN overrides (config.binaries). */
  binaries: Record<string, string>;
  sdks: SdkLoader;
  /** Whether this deployment has worker nodes for remote_node runs (distributed mode). */
  remoteAvailable: boolean;
  nodeName: string;
  /** The hosts the operator lets runs ssh to, and the only directory of their key files. */
  ssh: SshGrant;
  /** Lanes that may carry runs (lanes/policies.ts runLanes). */
  runLanes: ReadonlySet<string>;
}

/** What a run (or a session's first run) asks for, as far as its placement goes. */
export interface PlacementRequest {
  requested: RequestedBackend;
  executionMode: ExecutionMode;
  queue: string;
  /** The native permission mode the run's CLI gets (run-options.ts). */
  providerPermissionMode: string | null;
}

/**
 * Where a run executes: its queue lane, its backend and its execution surface, each checked where
 * it is chosen (at session creation and again at each run), so a session that could never run is
 * refused at once.
 */
export class Placement {
  /** The engine's lane ids; an engine's lanes are fixed when it is built, and lanes() copies every config on each call. */
  private readonly laneIds: Set<string>;

  constructor(private readonly deps: PlacementDeps) {
    this.laneIds = new Set(deps.engine.lanes().map((l) => l.id));
  }

  /**
   * The backend and observability fields of a run, with the provider's SDK probed only when the
   * request could use it. The provider's CLI must be found where the run will execute: here for a
   * local run (the SDK lane drives the same binary, so without it the SDK cannot run either), else
   * cli_not_found; a remote run's node is asked by assertRemoteCli once its options are resolved.
   */
  async resolve(provider: ProviderDefinition, request: PlacementRequest): Promise<EventMetadata> {
    const { sdks, remoteAvailable, nodeName, binaries } = this.deps;
    const { requested, executionMode, queue } = request;
    const binary = resolveBinary(provider, binaries);
    const cliHere = await findBinary(binary, process.env.PATH ?? '');
    if (executionMode === 'local' && !cliHere) throw cliNotFound(provider, binary, 'on this server');
    const loaded = needsSdkProbe(provider, requested) ? await sdks.status(provider) : null;
    const sdk = loaded && !cliHere ? { available: false, runtime: null, error: `the CLI it drives, ${binary}, is not found here` } : loaded;
    const needs = provider.laneNeeds?.(request.providerPermissionMode) ?? [];
    return resolveBackend({ provider, requestedBackend: requested, executionMode, remoteAvailable, sdk, needs, node: nodeName, queue });
  }

  /**
   * A remote run's CLI as its node or pool reports it (NodeSnapshot.missing_clis): refused when every
   * live node there that serves the provider lacks it. No live node is left to the run's start, which
   * waits remote_connect_timeout_ms for one (nodes/remote-start.ts).
   */
  async assertRemoteCli(provider: ProviderDefinition, remoteNode: string): Promise<void> {
    const target = remoteTarget(remoteNode);
    const serving = (await this.deps.cluster.nodes()).filter(
      (n) => n.role === 'worker' && (target.kind === 'node' ? n.name === target.name : n.pool === target.pool) && n.providers.includes(provider.name),
    );
    const lacking = serving.map((n) => n.missing_clis?.find((m) => m.provider === provider.name));
    if (serving.length > 0 && lacking.every((m) => m !== undefined)) {
      throw cliNotFound(provider, lacking[0]!.binary, target.kind === 'node' ? `on node ${target.name}` : `on any node of pool ${target.pool}`);
    }
  }

  assertQueue(queue: string): void {
    if (!this.laneIds.has(queue)) throw badField('queue', `unknown queue lane "${queue}"; lanes: ${[...this.laneIds].join(', ')}`);
  }

  /**
   * The queue of a session or a run: a lane that exists and carries runs. The service's own lanes
   * (system, control, session, query) are refused, so no run can take the slots interrupts and
   * approval decisions need.
   */
  assertRunQueue(queue: string): void {
    this.assertQueue(queue);
    const { runLanes } = this.deps;
    if (!runLanes.has(queue)) {
      const open = [...this.laneIds].filter((id) => runLanes.has(id));
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
