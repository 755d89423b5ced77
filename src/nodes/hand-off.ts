import type { Logger } from 'pino';
import type { RunRecord, SessionRecord, Store } from '../store/types.js';
import { VERSION } from '../version.js';
import type { Cluster } from './cluster.js';
import { remoteTarget } from './remote-options.js';
import { startOnNode } from './remote-start.js';

export interface HandOffDeps {
  store: Store;
  cluster: Cluster;
  log: Logger;
}

/**
 * API side of a remote_node run: place it on a worker (remote-start.ts), which owns it from its
 * acknowledgement on. Throws the start failure (or the signal's reason) when no worker took it; the
 * caller then ends the run.
 */
export async function handOff(deps: HandOffDeps, run: RunRecord, session: SessionRecord, signal: AbortSignal): Promise<void> {
  const options = run.options.remote!;
  const continuing = run.options.continuation && session.provider_session_id !== null;
  const pooled = remoteTarget(options.remote_node).kind === 'pool';
  const node = await startOnNode({
    cluster: deps.cluster,
    runId: run.id,
    provider: run.provider,
    version: VERSION,
    options,
    affinity: pooled && continuing ? await conversationNode(deps.store, run) : null,
    signal,
  });
  deps.log.info({ runId: run.id, node: node.name, instance: node.id }, 'run handed to a worker');
}

/** The node of the session's latest remote run that started: the provider's files of the conversation are there. */
async function conversationNode(store: Store, run: RunRecord): Promise<string | null> {
  const started = (await store.runs.listBySession(run.session_id)).filter((r) => r.id !== run.id && r.options.remote && r.started_at !== null);
  started.sort((a, b) => a.started_at!.localeCompare(b.started_at!));
  return started.at(-1)?.observability.node ?? null;
}
