/** Codex's permission modes: for each, the transport it runs on and its approval policy and sandbox. */
import { AsmError } from '../../errors/kinds.js';
import type { ProviderRunInput } from '../types.js';

/*
 * permission_mode      transport    approval policy / sandbox                 can ask?
 * default              app-server   on-request, workspace-write               yes
 * read-only            app-server   on-request, read-only                     yes (anything that writes)
 * untrusted            app-server   untrusted, workspace-write                yes (all but trusted commands)
 * full-auto            exec         -s workspace-write -c approval_policy="never"   no
 * danger-full-access   exec         --dangerously-bypass-approvals-and-sandbox      no
 *
 * Why two: `codex exec --json` cannot ask for approval at all (its policy is forced to never and an
 * escalation is refused without a trace in the JSONL), so every mode that may ask runs on
 * `codex app-server`, where approvals are JSON-RPC requests. The modes that can never ask use exec:
 * one process per turn, nothing to hold open.
 */

export interface Mode {
  transport: 'app-server' | 'exec';
  approvalPolicy?: 'on-request' | 'untrusted';
  /** The sandbox: app-server's thread/start, and the SDK lane's for every mode. */
  sandbox: 'read-only' | 'workspace-write' | 'danger-full-access';
  execArgs?: string[];
}

export const MODES: Record<string, Mode> = {
  default: { transport: 'app-server', approvalPolicy: 'on-request', sandbox: 'workspace-write' },
  'read-only': { transport: 'app-server', approvalPolicy: 'on-request', sandbox: 'read-only' },
  untrusted: { transport: 'app-server', approvalPolicy: 'untrusted', sandbox: 'workspace-write' },
  'full-auto': { transport: 'exec', sandbox: 'workspace-write', execArgs: ['-s', 'workspace-write', '-c', 'approval_policy="never"'] },
  'danger-full-access': { transport: 'exec', sandbox: 'danger-full-access', execArgs: ['--dangerously-bypass-approvals-and-sandbox'] },
};

export function modeOf(input: ProviderRunInput): Mode {
  const mode = MODES[input.permissionMode ?? 'default'];
  if (!mode) throw new AsmError('config_invalid', `codex has no permission mode "${input.permissionMode}"`);
  return mode;
}
