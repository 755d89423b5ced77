import type { AsmConfig } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { CommandHandle } from '../lanes/types.js';
import { resolveBinary } from '../providers/registry.js';
import type { ProviderDefinition } from '../providers/types.js';
import type { RunRecord, Store } from '../store/types.js';
import type { Cluster } from './cluster.js';
import { remoteFailure } from '../errors/remote-start-failures.js';
import { preflightOnWorker } from './remote-start.js';

/** The one lane of a worker's own engine: the runs handed to it. */
export const WORKER_LANE = 'remote';

export interface RemoteAcceptorDeps {
  config: AsmConfig;
  store: Store;
  cluster: Cluster;
  providers: Map<string, ProviderDefinition>;
  /** Queue the run's execution on this worker's own engine (WORKER_LANE). */
  enqueue: (run: RunRecord) => Promise<CommandHandle>;
}

/**
 * Worker side of a remote_node run: check that this node can start it, take ownership, queue it on
 * the worker's own engine and acknowledge. From then on the worker executes it like a local run.
 */
export class RemoteAcceptor {
  /** Runs accepted (queued on this worker's engine or executing), until they end: the worker's load. */
  private readonly accepted = new Set<string>();

  constructor(private readonly deps: RemoteAcceptorDeps) {}

  get acceptedRuns(): number {
    return this.accepted.size;
  }

  async accept(runId: string): Promise<{ node: string }> {
    const { config, store, cluster } = this.deps;
    const worker = config.worker!;
    const run = await store.runs.get(runId);
    if (!run?.options.remote) throw new AsmError('not_found', `remote_node run ${runId} not found`);
    if (run.state !== 'queued' || (run.owner !== null && run.owner !== cluster.self)) {
      throw new AsmError('conflict', `run ${runId} is ${run.state}${run.owner ? ` and owned by ${run.owner}` : ''}`);
    }
    const provider = this.deps.providers.get(run.provider);
    if (!provider || config.disabledProviders.has(run.provider) || !(worker.providers ?? [run.provider]).includes(run.provider)) {
      throw remoteFailure('remote_capability_mismatch', `node ${config.nodeName} does not serve provider ${run.provider}`, { missing: [run.provider] });
    }
    await workerPreflight(config, run, provider);
    const owned = await store.runs.update(runId, { owner: cluster.self, observability: { ...run.observability, node: config.nodeName } });
    let handle;
    try {
      handle = await this.deps.enqueue(owned);
    } catch (err) {
      await store.runs.update(runId, { owner: null });
      throw remoteFailure('remote_connect_failed', `node ${config.nodeName} takes no new runs: ${AsmError.from(err).message}`);
    }
    this.accepted.add(runId);
    void handle.result
      .catch(() => undefined)
      .finally(() => {
        this.accepted.delete(runId);
        return cluster.announce().catch(() => undefined);
      });
    // The new load is published before the acknowledgement, so the next placement in a pool sees it.
    await cluster.announce();
    return { node: config.nodeName };
  }
}

/** Can this worker start the run's CLI, and where: the run's cwd on this node. */
export function workerPreflight(config: AsmConfig, run: RunRecord, provider: ProviderDefinition): Promise<string> {
  return preflightOnWorker({
    binary: resolveBinary(provider, config.binaries),
    workspaceRoot: config.workspaceRoot,
    remoteCwd: run.options.remote!.remote_cwd,
    path: process.env.PATH ?? '',
  });
}
