import { resolveWorkspaceDir } from '../backends/workspace.js';
import { LocalWorkspace, type WorkspaceAccess } from '../backends/workspace-access.js';
import { budget, WorkspaceFiles, type Budget } from '../backends/workspace-files.js';
import type { AsmConfig } from '../config.js';
import type { Cluster } from '../nodes/cluster.js';
import { sessionRemoteOptions } from '../nodes/remote-options.js';
import { filesNodeOf, RemoteWorkspace } from '../nodes/worker-files.js';
import type { SessionRecord } from '../store/types.js';
import type { TenantDirectory } from '../tenants.js';

export interface SessionFilesDeps {
  config: AsmConfig;
  tenants: TenantDirectory;
  cluster: Cluster;
}

/**
 * Where the files API of a session reads and writes: its working directory (checked inside its
 * tenant's root again at each request, as a run's is), or for a remote_node session the cwd its runs
 * get on the worker it names (nodes/worker-files.ts); and how much one upload may write.
 */
export class SessionFiles {
  constructor(private readonly deps: SessionFilesDeps) {}

  async workspace(session: SessionRecord): Promise<WorkspaceAccess> {
    if (session.execution_mode === 'remote_node') {
      const options = await sessionRemoteOptions(this.deps.config, session);
      return new RemoteWorkspace(await filesNodeOf(this.deps.cluster, options), options.remote_cwd ?? '.', session.id);
    }
    return new LocalWorkspace(await WorkspaceFiles.at(await resolveWorkspaceDir(this.deps.tenants.get(session.tenant).workspaceRoot, session.cwd)));
  }

  /** One upload's bounds: the server's, or the tenant's quotas where lower. */
  uploadBudget(tenant: string): Budget {
    const { quotas } = this.deps.tenants.get(tenant);
    const { uploadBytes, uploadFiles } = this.deps.config.workspaces;
    return budget(Math.min(uploadBytes, quotas.uploadBytes), Math.min(uploadFiles, quotas.uploadFiles));
  }
}
