import { mkdir, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { cloneInto } from '../backends/git-clone.js';
import type { WorkspaceSettings } from '../config.js';
import { badField } from '../errors/kinds.js';
import type { WorkspaceSpec } from '../schemas/workspace.js';

/**
 * A workspace of a session's own (`workspace` at creation, instead of `cwd`): the folder
 * `<tenant's workspace root>/<session id>`, empty for `archive_upload` (the files API fills it), or a
 * clone of `git.url` at `git.ref` (backends/git-clone.ts says which URLs). Made on the process that
 * creates the session, whose workspace root is where the session's local runs execute. A session that
 * could not get its workspace is not created, and the folder goes.
 */
export async function makeSessionWorkspace(tenantRoot: string, sessionId: string, spec: WorkspaceSpec, settings: WorkspaceSettings): Promise<string> {
  const dir = join(await realpath(tenantRoot), sessionId);
  await mkdir(dir, { mode: 0o755 });
  try {
    if ('git' in spec) await cloneInto(dir, spec.git.url, spec.git.ref, { schemes: settings.gitSchemes, timeoutMs: settings.gitTimeoutMs });
    return dir;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** `cwd` and `workspace` both say where the session works: one of them at most. */
export function assertOneWorkspace(body: { cwd?: string; workspace?: WorkspaceSpec; execution_mode?: string }): void {
  if (body.workspace === undefined) return;
  if (body.cwd !== undefined) throw badField('workspace', 'give either cwd or workspace, not both');
  if (body.execution_mode === 'remote_node') throw badField('workspace', 'a remote_node session works in driver_opts.remote_cwd on its worker; workspace is for local sessions');
}
