import { AsmError, badField } from '../errors/kinds.js';
import { runGit } from './git.js';

/**
 * A session's workspace from a git repository, cloned where its runs execute. The URL policy:
 * `scheme://…` URLs only (no scp-like `host:path`, no `ext::` or other transports), and only the
 * schemes of ASM_WORKSPACE_GIT_SCHEMES (https by default; `file` only where the operator lists it);
 * git is told the same (protocol.allow), so a redirect or a submodule cannot switch transport. No
 * submodules are fetched, no credentials are asked for, and no hook runs.
 */

export interface CloneSettings {
  schemes: readonly string[];
  timeoutMs: number;
}

export function gitScheme(url: string, allowed: readonly string[]): string {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1].toLowerCase();
  if (!scheme) throw badField('workspace.git.url', 'must be a URL with a scheme, such as https://host/repo.git');
  if (!allowed.includes(scheme)) {
    throw new AsmError('forbidden', `workspace.git.url: the scheme ${scheme} is not allowed here (ASM_WORKSPACE_GIT_SCHEMES: ${allowed.join(', ') || 'none'})`, {
      details: { field: 'workspace.git.url' },
    });
  }
  return scheme;
}

/** Clones `url` into the empty folder `dir` and checks out `ref` (a branch, tag or commit), or the remote's HEAD. */
export async function cloneInto(dir: string, url: string, ref: string | undefined, settings: CloneSettings): Promise<void> {
  const scheme = gitScheme(url, settings.schemes);
  const protocols = ['-c', 'protocol.allow=never', '-c', `protocol.${scheme}.allow=always`];
  const opts = { cwd: dir, home: dir, timeoutMs: settings.timeoutMs };
  try {
    await runGit([...protocols, 'clone', '--quiet', ...(ref ? ['--no-checkout'] : []), '--', url, dir], opts);
    if (ref) await runGit(['checkout', '--quiet', ref, '--'], opts);
  } catch (err) {
    const failure = AsmError.from(err);
    // Credentials in the URL (https://user:token@host/…) never reach an answer or a log.
    const message = failure.message.replace(/\/\/[^/@\s]+@/g, '//***@');
    throw new AsmError(failure.kind === 'timeout' ? 'timeout' : 'bad_request', `workspace.git: ${message}`, { details: { field: 'workspace.git' } });
  }
}
