import { createHash, type Hash } from 'node:crypto';
import { lstatSync, opendirSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { join } from 'node:path';

/**
 * How long before a walk an entry must have last changed for its times to vouch for it. A change
 * within the same tick of a file system's clock can leave a file's times as they were: a few
 * milliseconds on Linux's own file systems, 1 s on ext3 or an NFS server's, 2 s on FAT. Git guards
 * its own index the same way (its "racily clean" entries).
 */
export const SETTLED_MS = 2_000;

/** The fingerprint of a workspace with nothing in it (but its own `.git`, which git never adds). */
export const EMPTY_WORKSPACE = createHash('sha256').digest('hex');

/**
 * A workspace's stat fingerprint: one hash of every path under it, each with its inode, size, mode,
 * mtime and ctime (lstat: a link is never followed, as git never follows one). A later walk with the
 * same fingerprint means nothing in the workspace was added, removed, renamed or written since, as
 * git's own index trusts stat data; shadow-git.ts then skips its `git add`, a process of several
 * milliseconds on each run's way to its terminal event.
 *
 * Null where the walk cannot vouch for that, and git must look:
 * - more than `maxEntries` files and folders (ASM_DIFF_STAT_MAX_ENTRIES): a large tree is cheaper
 *   for git, in C and in a process of its own, than for the service's event loop (`npm run bench --
 *   diff` prints both, `small_tree`);
 * - an entry that changed within SETTLED_MS of the walk (or has a time in the future);
 * - a `.git` below the top: `git add` records that folder as the nested repository's HEAD commit,
 *   which changes with nothing else under it. The top's own `.git` is left out: git never adds a
 *   path named `.git`, and its contents never reach a snapshot;
 * - a folder that cannot be read.
 */
export async function workspaceFingerprint(root: string, maxEntries: number, now: number = Date.now()): Promise<string | null> {
  if (maxEntries <= 0) return null;
  const walk = { hash: createHash('sha256'), entries: 0, maxEntries, settledBefore: BigInt(now - SETTLED_MS) * 1_000_000n };
  try {
    return (await walkFolder(root, '', walk)) ? walk.hash.digest('hex') : null;
  } catch {
    return null;
  }
}

interface Walk {
  hash: Hash;
  entries: number;
  maxEntries: number;
  /** Nanoseconds since the epoch: an entry changed at or after this is not settled. */
  settledBefore: bigint;
}

/**
 * Hashes the folder's entries and walks its subfolders; false where the walk must give up. A folder's
 * entries are read at once, synchronously (a few microseconds each, where a promise each cost three
 * times the CPU: bench/RESULTS.md, twenty-sixth pass), and the event loop gets a turn between folders.
 */
async function walkFolder(folder: string, relative: string, walk: Walk): Promise<boolean> {
  const listed = entriesOf(folder, relative === '', walk);
  if (listed === null) return false;
  const stats = listed.map((name) => lstatSync(join(folder, name), { bigint: true }));
  const subfolders: string[] = [];
  for (const [i, name] of listed.entries()) {
    const stat = stats[i]!;
    if (stat.mtimeNs >= walk.settledBefore || stat.ctimeNs >= walk.settledBefore) return false;
    const path = relative === '' ? name : `${relative}/${name}`;
    walk.hash.update(`${path}\0${stat.ino}:${stat.size}:${stat.mode}:${stat.mtimeNs}:${stat.ctimeNs}\n`);
    if (stat.isDirectory()) subfolders.push(name);
  }
  for (const name of subfolders) {
    await nextTurn();
    if (!(await walkFolder(join(folder, name), relative === '' ? name : `${relative}/${name}`, walk))) return false;
  }
  return true;
}

/**
 * The folder's names, sorted, counted against the walk's bound as they are read (a huge folder is not
 * read whole); null past the bound or at a nested repository's `.git`. The top's `.git` is left out.
 */
function entriesOf(folder: string, top: boolean, walk: Walk): string[] | null {
  const dir = opendirSync(folder);
  try {
    const names: string[] = [];
    for (let entry = dir.readSync(); entry !== null; entry = dir.readSync()) {
      if (entry.name === '.git') {
        if (top) continue;
        return null;
      }
      names.push(entry.name);
      if (++walk.entries > walk.maxEntries) return null;
    }
    return names.sort();
  } finally {
    dir.closeSync();
  }
}
