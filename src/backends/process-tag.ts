import { randomUUID } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { processIds } from './process-group.js';

/**
 * Finding the processes of an unsandboxed run that left its process group (ASM_SANDBOX=none).
 *
 * The bubblewrap sandbox puts each run in a PID namespace of its own, which the kernel empties when
 * the run's init exits, so nothing a CLI started survives it, whatever it did (setsid, double fork).
 * Without a sandbox a CLI can leave its group the same ways, and Node offers neither a cgroup nor
 * PR_SET_CHILD_SUBREAPER to keep hold of such a process. What every descendant does inherit is the
 * environment: the run's CLI gets a random tag in it (TAG_VARIABLE), and when the run ends, every
 * process of the service's user whose /proc/<pid>/environ carries that tag is killed.
 *
 * Only the processes created since the run's CLI was about to start are read (`PidMark`): PIDs are
 * handed out in increasing order, so while the counter has not wrapped round since, those are the
 * PIDs above the mark, a few instead of every process of the machine, whose reading was the largest
 * cost of an unsandboxed run after its spawn (bench/RESULTS.md, runs). Whether it wrapped is told by
 * the kernel's count of forks: more forks than PIDs handed out past the mark means it may have (or
 * that other PID namespaces forked), and the whole of /proc is read as before.
 *
 * The limits, stated in README "Sandbox": a process that clears its environment before it detaches
 * escapes the sweep, and so does one that existed before the run and was made to exec with the tag,
 * or one forked after enough failed forks (refused by a PID limit once their PID was handed out, so
 * not counted) to wrap the counter round.
 * That is what ASM_SANDBOX=none means: every tenant is trusted.
 */

export const TAG_VARIABLE = 'ASM_RUN_TAG';

/** 122 random bits, from randomUUID's buffered pool: a randomBytes call per run was 228 ms of 15 s busy in the runs bench's profile (bench/RESULTS.md issue 14, fourth pass). */
export function newRunTag(): string {
  return randomUUID().replaceAll('-', '');
}

/**
 * SIGKILLs every process whose environment carries the tag. Repeated until a scan finds none (at most
 * MAX_SWEEPS), because a process may fork between being listed and being killed.
 */
export function killTagged(tag: string, since: PidMark | null = null): void {
  const needle = Buffer.from(`\0${TAG_VARIABLE}=${tag}\0`);
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    const found = tagged(needle, createdSince(since));
    if (found.length === 0) return;
    for (const pid of found) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile, or not ours to kill
      }
    }
  }
}

const MAX_SWEEPS = 5;

/** Where the kernel's PID counter and fork count stood (/proc/loadavg, /proc/stat); null where they cannot be read. */
export interface PidMark {
  lastPid: number;
  forks: number;
}

export function markPids(): PidMark | null {
  const loadavg = readProc('/proc/loadavg')?.toString('latin1');
  const lastPid = Number(loadavg?.trim().split(' ')[4]);
  const forks = /^processes (\d+)$/m.exec(readProc('/proc/stat')?.toString('latin1') ?? '');
  return Number.isSafeInteger(lastPid) && forks ? { lastPid, forks: Number(forks[1]) } : null;
}

/**
 * The PIDs of every process created since `since`, when they are known to be the range above it:
 * the counter has not wrapped round if it handed out at least as many PIDs as there were forks (a
 * wrap hands out all the others first). Null: read every process.
 */
function createdSince(since: PidMark | null): { above: number; upTo: number } | null {
  const now = since && markPids();
  if (!since || !now || now.lastPid < since.lastPid || now.forks - since.forks > now.lastPid - since.lastPid) return null;
  return { above: since.lastPid, upTo: now.lastPid };
}

function tagged(needle: Buffer, range: { above: number; upTo: number } | null): number[] {
  const found: number[] = [];
  const first = needle.subarray(1);
  for (const pid of candidates(range)) {
    const environ = readProc(`/proc/${pid}/environ`);
    // environ is NUL-separated; the first variable has no NUL before it, so it is matched without the needle's leading one.
    if (environ && (environ.subarray(0, first.length).equals(first) || environ.includes(needle))) found.push(pid);
  }
  return found;
}

/** Fewer PIDs handed out than this since the mark: each is tried, instead of listing /proc (a thread's PID reads as its process). */
const PROBE_MAX = 64;

function candidates(range: { above: number; upTo: number } | null): number[] {
  if (range && range.upTo - range.above <= PROBE_MAX) return Array.from({ length: range.upTo - range.above }, (_, i) => range.above + 1 + i);
  const pids = processIds();
  return range ? pids.filter((pid) => pid > range.above && pid <= range.upTo) : pids;
}

/**
 * One buffer for every read of a scan, grown when an environment is larger: a scan reads every
 * process's environ at each run's end (bench/RESULTS.md, runs), and a fresh buffer per file (what
 * readFileSync allocates for a /proc file, whose size it cannot know) was most of its cost.
 */
let scratch = Buffer.allocUnsafe(64 * 1024);

/** A /proc file (valid until the next call), or null when it is gone or not readable. */
function readProc(path: string): Buffer | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null; // gone, or another user's
  }
  try {
    let size = 0;
    for (;;) {
      if (size === scratch.length) {
        const larger = Buffer.allocUnsafe(scratch.length * 2);
        scratch.copy(larger);
        scratch = larger;
      }
      const read = readSync(fd, scratch, size, scratch.length - size, null);
      if (read === 0) return scratch.subarray(0, size);
      size += read;
    }
  } catch {
    return null; // exited while being read
  } finally {
    closeSync(fd);
  }
}
