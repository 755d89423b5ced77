import type { Cluster } from '../nodes/cluster.js';

/** A session's admission and record changes, one at a time across every process of the deployment. */
export function withSessionLock<T>(cluster: Cluster, sessionId: string, work: () => Promise<T>): Promise<T> {
  return cluster.withLock(`session:${sessionId}`, work);
}
