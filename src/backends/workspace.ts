import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { AsmError, badField } from '../errors/kinds.js';

/**
 * Resolve a session's working directory inside the workspace root. Relative paths are taken from the
 * root; `..` and symlinks that lead outside it are refused, because the agent gets full access to its cwd.
 */
export async function resolveWorkspaceDir(root: string, requested: string | undefined): Promise<string> {
  const rootReal = await realpath(root);
  const target = resolve(rootReal, requested ?? '.');
  let real: string;
  try {
    real = await realpath(target);
  } catch {
    throw badField('cwd', `directory ${requested} does not exist inside the workspace root`);
  }
  const rel = relative(rootReal, real);
  if (rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw new AsmError('forbidden', `cwd: ${requested} resolves outside the workspace root`, { details: { field: 'cwd' } });
  }
  if (!(await stat(real)).isDirectory()) throw badField('cwd', `${requested} is not a directory`);
  return real;
}
