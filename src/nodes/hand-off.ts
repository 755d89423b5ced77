import type { Logger } from 'pino';
import { runLogFields } from '../logger.js';
import type { RunRecord, SessionRecord } from '../store/types.js';
import { VERSION } from '../version.js';
import type { Cluster } from './cluster.js';
import { remoteTarget } from './remote-options.js';
import { startOnNode } from './remote-start.js';

export interface HandOffDeps {
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
    affinity: pooled && continuing ? (session.conversation_node ?? null) : null,
    signal,
  });
  deps.log.info({ ...runLogFields(run), node: node.name, instance: node.id }, 'run handed to a worker');
}
