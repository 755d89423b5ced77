import { lstat, readlink, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { AsmError, badField } from '../errors/kinds.js';

/** Whether `path` is `root` or below it; both absolute and already resolved. */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

/**
 * Resolve a session's working directory inside the workspace root. Relative paths are taken from the
 * root; `..` and symlinks that lead outside it are refused, because the agent gets full access to its
 * cwd. Checked at session creation and again at the start of each run, since the directory may have
 * been replaced (by a symlink) in between. A refusal never tells whether a path outside the root exists.
 */
export async function resolveWorkspaceDir(root: string, requested: string | undefined): Promise<string> {
  const rootReal = await realRoot(root);
  const found = await resolveInside(rootReal, requested ?? '.');
  if (found === 'outside') {
    throw new AsmError('forbidden', `cwd: ${requested} resolves outside the workspace root`, { details: { field: 'cwd' } });
  }
  if (found === 'missing') throw badField('cwd', `directory ${requested} does not exist inside the workspace root`);
  // The root itself was checked to be a directory when its real path was looked up.
  if (found !== rootReal && !(await stat(found)).isDirectory()) throw badField('cwd', `${requested} is not a directory`);
  return found;
}

/** Real paths of the workspace roots by configured path; a failed lookup is not kept, so it is tried again. */
const realRoots = new Map<string, Promise<string>>();

/**
 * The real path of a workspace root, looked up once per root: the roots are fixed by the
 * configuration (a handful of folders), and two `realpath`s and a `stat` per session and run were
 * most of the file-system time of creating a session (bench/RESULTS.md, http). The folders below a
 * root are still walked on every check, so a swapped symlink there is always seen.
 */
export function realRoot(root: string): Promise<string> {
  let real = realRoots.get(root);
  if (!real) {
    real = realpath(root).then(async (path) => {
      if (!(await stat(path)).isDirectory()) throw badField('cwd', 'the workspace root is not a directory');
      return path;
    });
    realRoots.set(root, real);
    real.catch(() => realRoots.delete(root));
  }
  return real;
}

/** Symlinks followed before a path counts as missing (the kernel's ELOOP limit). */
const MAX_SYMLINKS = 40;

/**
 * `requested` with every symlink on it resolved, walking down from the root one name at a time.
 * A step that leaves the root is 'outside' before anything outside is looked at, so whether a path
 * there exists cannot be learned from the answer; 'missing' only ever describes a name inside the root.
 */
async function resolveInside(rootReal: string, requested: string): Promise<string | 'outside' | 'missing'> {
  const target = resolve(rootReal, requested);
  if (!isInside(rootReal, target)) return 'outside';
  let current = rootReal;
  let names = namesBelow(rootReal, target);
  let symlinks = 0;
  while (names.length > 0) {
    const next = join(current, names.shift()!);
    try {
      if (!(await lstat(next)).isSymbolicLink()) {
        current = next;
        continue;
      }
      if (++symlinks > MAX_SYMLINKS) return 'missing';
      const followed = resolve(current, await readlink(next), ...names);
      if (!isInside(rootReal, followed)) return 'outside';
      current = rootReal;
      names = namesBelow(rootReal, followed);
    } catch {
      return 'missing';
    }
  }
  return current;
}

function namesBelow(root: string, path: string): string[] {
  return relative(root, path).split(sep).filter(Boolean);
}
