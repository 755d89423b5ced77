import { readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';

/**
 * Whether a signal sent to a process group now would reach anyone: some live member of the group does
 * not ignore it (Linux /proc). Right after a spawn, the group is the sandbox's wrappers, which ignore
 * the signals the service sends (bwrap.ts), until the CLI has been exec'd with them at their defaults;
 * a signal sent in that window is lost (issue 13, finding 7). The runner uses this to send it again.
 */
export function groupTakes(pgid: number, signal: NodeJS.Signals): boolean {
  const bit = 1n << BigInt(constants.signals[signal] - 1);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8'); // "pid (comm) state ppid pgrp …"
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) !== pgid || state === 'Z') continue;
      const ignored = /^SigIgn:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1];
      if (ignored !== undefined && (BigInt(`0x${ignored}`) & bit) === 0n) return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}
