import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';

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
 * The limit, stated in README "Sandbox": a process that clears its environment before it detaches
 * escapes the sweep. That is what ASM_SANDBOX=none means: every tenant is trusted.
 */

export const TAG_VARIABLE = 'ASM_RUN_TAG';

export function newRunTag(): string {
  return randomBytes(12).toString('hex');
}

/**
 * SIGKILLs every process whose environment carries the tag. Repeated until a scan finds none (at most
 * MAX_SWEEPS), because a process may fork between being listed and being killed.
 */
export function killTagged(tag: string): void {
  const needle = Buffer.from(`\0${TAG_VARIABLE}=${tag}\0`);
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    const found = tagged(needle);
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

function tagged(needle: Buffer): number[] {
  const found: number[] = [];
  const first = needle.subarray(1);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const environ = readEnviron(entry);
    // environ is NUL-separated; the first variable has no NUL before it, so it is matched without the needle's leading one.
    if (environ && (environ.subarray(0, first.length).equals(first) || environ.includes(needle))) found.push(Number(entry));
  }
  return found;
}

/**
 * One buffer for every read of a scan, grown when an environment is larger: a scan reads every
 * process's environ at each run's end (bench/RESULTS.md, runs), and a fresh buffer per file (what
 * readFileSync allocates for a /proc file, whose size it cannot know) was most of its cost.
 */
let scratch = Buffer.allocUnsafe(64 * 1024);

/** A process's environ (valid until the next call), or null when it is gone or not readable. */
function readEnviron(pid: string): Buffer | null {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/environ`, 'r');
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
