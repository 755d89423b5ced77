import { readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';

/**
 * Whether a signal sent to a process group now would reach anyone: some live member of the group does
 * not ignore it (Linux /proc). Right after a spawn, the group is the sandbox's wrappers, which ignore
 * the signals the service sends (bwrap.ts), until the CLI has been exec'd with them at their defaults;
 * a signal sent in that window is lost (issue 13, finding 7). The runner uses this to send it again.
 *
 * The members are looked for among the group leader's descendants (`/proc/<pid>/task/<tid>/children`),
 * which is what the run's own processes cost to read; only when the leader is gone is every process of
 * the machine read, at ~30 µs each on the main thread (2–3.5 ms for 85 processes here, tens of ms on a
 * busy host, and again at each resend). A member reparented away from the leader's tree (an orphan of
 * a dead wrapper) while the leader lives is not seen: the signal is then sent again until the resend
 * window ends, which such a member has already been sent anyway.
 */
export function groupTakes(pgid: number, signal: NodeJS.Signals): boolean {
  const bit = 1n << BigInt(constants.signals[signal] - 1);
  const takes = (pid: number) => inGroup(pid, pgid) && notIgnoring(pid, bit);
  if (!inGroup(pgid, pgid)) return processIds().some(takes);
  const pending = [pgid];
  for (let pid = pending.pop(); pid !== undefined; pid = pending.pop()) {
    // A descendant that left the group took its own descendants with it (the leader was checked above).
    if (pid !== pgid && !inGroup(pid, pgid)) continue;
    if (notIgnoring(pid, bit)) return true;
    pending.push(...childrenOf(pid));
  }
  return false;
}

/** Whether process `pid` is a live (not zombie) member of group `pgid`; false once it is gone. */
function inGroup(pid: number, pgid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); // "pid (comm) state ppid pgrp …"
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(pgrp) === pgid && state !== 'Z';
  } catch {
    return false;
  }
}

/** Whether process `pid` does not ignore the signal whose bit this is; false once it is gone. */
function notIgnoring(pid: number, bit: bigint): boolean {
  try {
    const ignored = /^SigIgn:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return ignored !== undefined && (BigInt(`0x${ignored}`) & bit) === 0n;
  } catch {
    return false;
  }
}

/** The children of every thread of `pid` (a thread's children are listed under that thread). */
function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
      try {
        return readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
      } catch {
        return [];
      }
    });
  } catch {
    return [];
  }
}

/** Every process of the machine (its PID folders in /proc). */
export function processIds(): number[] {
  return readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).map(Number);
}

/** Whether a process `pid` is there (signal 0 reaches it, or it is another user's). */
export function processExists(pid: number): boolean {
  try {
    return pid > 0 && process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
