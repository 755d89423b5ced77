import { resolveWorkspaceDir } from '../backends/workspace.js';
import { budget, WorkspaceFiles, type Budget } from '../backends/workspace-files.js';
import type { AsmConfig } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { SessionRecord } from '../store/types.js';
import type { TenantDirectory } from '../tenants.js';

export interface SessionFilesDeps {
  config: AsmConfig;
  tenants: TenantDirectory;
}

/**
 * Where the files API of a session reads and writes: its working directory (checked inside its
 * tenant's root again at each request, as a run's is), and how much one upload may write.
 */
export class SessionFiles {
  constructor(private readonly deps: SessionFilesDeps) {}

  async workspace(session: SessionRecord): Promise<WorkspaceFiles> {
    if (session.execution_mode === 'remote_node') {
      throw new AsmError('conflict', `session ${session.id} runs on worker nodes (execution_mode remote_node): its files live there, and the files API serves local sessions only`, {
        details: { field: 'execution_mode' },
      });
    }
    return WorkspaceFiles.at(await resolveWorkspaceDir(this.deps.tenants.get(session.tenant).workspaceRoot, session.cwd));
  }

  /** One upload's bounds: the server's, or the tenant's quotas where lower. */
  uploadBudget(tenant: string): Budget {
    const { quotas } = this.deps.tenants.get(tenant);
    const { uploadBytes, uploadFiles } = this.deps.config.workspaces;
    return budget(Math.min(uploadBytes, quotas.uploadBytes), Math.min(uploadFiles, quotas.uploadFiles));
  }
}
