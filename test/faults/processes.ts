import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

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

/** Every process descended from `pid` now (children, theirs, …), found by their parent pids in /proc. */
export function descendantsOf(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The fields after the command name, which may itself hold spaces and parentheses: state, ppid, …
      parentOf.set(Number(entry), Number(readFileSync(`/proc/${entry}/stat`, 'utf8').replace(/^.*\)/, '').trim().split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found: number[] = [];
  const wanted = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [child, parent] of parentOf) {
      if (wanted.has(parent) && !wanted.has(child)) {
        wanted.add(child);
        found.push(child);
        grew = true;
      }
    }
  }
  return found;
}

/** The program (its executable's path) and first two arguments of `pid` and of every process under it. */
export function programsUnder(pid: number): string[] {
  return [pid, ...descendantsOf(pid)].map((p) => {
    try {
      return [readlinkSync(`/proc/${p}/exe`), ...readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(1, 3)].join(' ');
    } catch {
      return ''; // gone meanwhile
    }
  });
}

/** Whether `pid` is a live process (a zombie is not). */
export function alive(pid: number): boolean {
  return !isZombie(String(pid));
}
