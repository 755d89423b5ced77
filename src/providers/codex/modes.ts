/** Codex's permission modes: the normalized table, and for each native mode its transport, approval policy and sandbox. */
import { AsmError } from '../../errors/kinds.js';
import type { ProviderDefinition, ProviderRunInput } from '../types.js';

/*
 * normalized  native (provider_permission_mode)  transport   approval policy / sandbox            can ask?
 * default     read-only                          app-server  on-request, read-only                yes: any write, any escalation
 * auto        full-auto                          app-server  on-request, workspace-write          yes: leaving the sandbox
 * bypass      danger-full-access                 exec        --dangerously-bypass-approvals-and-sandbox   no
 * plan        read-only-never                    exec        -s read-only -c approval_policy="never"      no: writes fail
 * —           untrusted                          app-server  untrusted, workspace-write          yes: all but trusted commands
 *
 * Why two transports: `codex exec --json` cannot ask for approval at all (its policy is forced to
 * never and an escalation is refused without a trace in the JSONL), so every mode that may ask runs on
 * `codex app-server`, where approvals are JSON-RPC requests. The modes that can never ask use exec:
 * one process per turn, nothing to hold open. codex 0.169 has no plan mode of its own on either
 * transport (app-server's collaboration modes are experimental), so plan is a read-only sandbox
 * where nothing may ask to leave it.
 */

export interface Mode {
  transport: 'app-server' | 'exec';
  approvalPolicy?: 'on-request' | 'untrusted';
  /** The sandbox: app-server's thread/start, and the SDK lane's for every mode. */
  sandbox: 'read-only' | 'workspace-write' | 'danger-full-access';
  execArgs?: string[];
}

export const MODES: Record<string, Mode> = {
  'read-only': { transport: 'app-server', approvalPolicy: 'on-request', sandbox: 'read-only' },
  'full-auto': { transport: 'app-server', approvalPolicy: 'on-request', sandbox: 'workspace-write' },
  'danger-full-access': { transport: 'exec', sandbox: 'danger-full-access', execArgs: ['--dangerously-bypass-approvals-and-sandbox'] },
  'read-only-never': { transport: 'exec', sandbox: 'read-only', execArgs: ['-s', 'read-only', '-c', 'approval_policy="never"'] },
  untrusted: { transport: 'app-server', approvalPolicy: 'untrusted', sandbox: 'workspace-write' },
};

export const PERMISSION_MODES: ProviderDefinition['permissionModes'] = {
  default: 'read-only',
  auto: 'full-auto',
  bypass: 'danger-full-access',
  plan: 'read-only-never',
};

export function modeOf(input: ProviderRunInput): Mode {
  const mode = MODES[input.permissionMode ?? PERMISSION_MODES.default];
  if (!mode) throw new AsmError('config_invalid', `codex has no permission mode "${input.permissionMode}"`);
  return mode;
}

/**
 * What a codex session needs from its lane, by its native mode (the table above): `approvals` under
 * every mode that runs on app-server, the ones that may ask (default, auto, untrusted). The SDK lane
 * cannot ask (sdk.ts), so lane resolution keeps these sessions on the core lane.
 */
export function laneNeeds(nativeMode: string | null): string[] {
  return MODES[nativeMode ?? PERMISSION_MODES.default]?.transport === 'app-server' ? ['approvals'] : [];
}
