import type { Cluster } from '../nodes/cluster.js';

/** A session's admission and record changes, one at a time across every process of the deployment. */
export function withSessionLock<T>(cluster: Cluster, sessionId: string, work: () => Promise<T>): Promise<T> {
  return cluster.withLock(lockName(sessionId), work);
}

/** Whether a holder of the session's lock works, or waits, now (in any process). */
export function sessionLockHeld(cluster: Cluster, sessionId: string): Promise<boolean> {
  return cluster.lockHeld(lockName(sessionId));
}

const lockName = (sessionId: string) => `session:${sessionId}`;
