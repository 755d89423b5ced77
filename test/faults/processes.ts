import { readdirSync, readFileSync } from 'node:fs';

/**
 * The fault suite's view of the host's processes: what a run may have left behind, found in /proc by
 * a marker its command line carries. Processes that setsid'd, double-forked or were reparented to init
 * are found too, which a process-group check would miss.
 */

/** The pids whose command line contains `marker`, other than this process. */
export function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline.includes(marker) && !isZombie(entry)) found.push(Number(entry));
  }
  return found;
}

function isZombie(pid: string): boolean {
  try {
    return / Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\)/, ' '));
  } catch {
    return true;
  }
}

/** The `sleep <marker>` processes themselves (the shells and wrappers that carry the marker aside). */
export function sleepers(marker: string): number[] {
  return processesWith(marker).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === `sleep\0${marker}\0`;
    } catch {
      return false;
    }
  });
}

/** A marker for one test: a number that `sleep` accepts as its duration and nothing else prints. */
export function sleepMarker(): string {
  return `${4000 + Math.floor(Math.random() * 1000)}.${Date.now() % 1_000_000}`;
}

/** SIGKILL, for a test's own cleanup: a process that is gone already is fine. */
export function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}
