import { mkdir, realpath, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { cloneInto } from '../backends/git-clone.js';
import { isInside, realRoot } from '../backends/workspace.js';
import type { WorkspaceSettings } from '../config.js';
import { badField } from '../errors/kinds.js';
import type { WorkspaceSpec } from '../schemas/workspace.js';

/**
 * A workspace of a session's own (`workspace` at creation, instead of `cwd`): the folder
 * `<tenant's workspace root>/<session id>`, empty for `archive_upload` (the files API fills it), or a
 * clone of `git.url` at `git.ref` (backends/git-clone.ts says which URLs). Made on the process that
 * creates the session, whose workspace root is where the session's local runs execute. A session that
 * could not get its workspace is not created, and the folder goes. A worker makes a remote_node
 * session's the same way, in the folder remoteWorkspacePlace names (http/worker-files.ts).
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

/** `cwd` (or a remote session's driver_opts.remote_cwd) and `workspace` all say where the session works: one of them at most. */
export function assertOneWorkspace(body: { cwd?: string; workspace?: WorkspaceSpec; driver_opts?: Record<string, unknown> }): void {
  if (body.workspace === undefined) return;
  if (body.cwd !== undefined) throw badField('workspace', 'give either cwd or workspace, not both');
  if (body.driver_opts?.remote_cwd !== undefined) throw badField('workspace', 'give either driver_opts.remote_cwd or workspace, not both');
}

/**
 * Where a remote_node session's own workspace goes: the folder a local one would get
 * (`<tenant's root>/<session id>`, which stays the session's `cwd`), taken relative to the workspace
 * root, under the worker's root; its runs get it as their remote_cwd.
 */
export async function remoteWorkspacePlace(workspaceRoot: string, tenantRoot: string, sessionId: string): Promise<{ cwd: string; remoteCwd: string }> {
  const cwd = join(await realpath(tenantRoot), sessionId);
  const root = await realRoot(workspaceRoot);
  if (!isInside(root, cwd)) {
    throw badField('workspace', "the tenant's workspace root lies outside ASM_WORKSPACE_ROOT, so its sessions have no folder of their own on a worker; give driver_opts.remote_cwd instead");
  }
  return { cwd, remoteCwd: relative(root, cwd) };
}
