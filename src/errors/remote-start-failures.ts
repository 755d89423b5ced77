import { AsmError, type ErrorDomain, type ErrorKind } from './kinds.js';

/**
 * The one table of ways a remote_node run can fail to start (nodes/remote-start.ts walks them in
 * order), each with the error kind and `details.reason` of the run's terminal error.
 */

interface FailureSpec {
  kind: ErrorKind;
  domain: ErrorDomain;
  retryable: boolean;
  meaning: string;
}

/** Every way a remote start can fail: the error kind and `details.reason` of the run's terminal error (README "Worker nodes"). */
export const REMOTE_START_FAILURES = {
  distribution_disabled: { kind: 'config_invalid', domain: 'config', retryable: false, meaning: 'the server has no Redis; refused with 400 at session creation or run submission' },
  remote_connect_timeout: { kind: 'connection_failed', domain: 'runtime', retryable: true, meaning: 'no live worker of that name or pool registered within remote_connect_timeout_ms' },
  remote_connect_failed: { kind: 'connection_failed', domain: 'runtime', retryable: true, meaning: 'the node is registered but does not listen (it died within its TTL), or every match is draining' },
  cookie_conflict: { kind: 'connection_failed', domain: 'runtime', retryable: false, meaning: "remote_cookie differs from the node's cookie (both absent counts as equal)" },
  remote_version_mismatch: { kind: 'connection_failed', domain: 'runtime', retryable: false, meaning: 'the node runs another major.minor of ASM, or another Node.js major' },
  remote_capability_mismatch: { kind: 'connection_failed', domain: 'runtime', retryable: false, meaning: "the session's provider is not served by the node" },
  remote_not_ready: { kind: 'connection_failed', domain: 'runtime', retryable: true, meaning: 'require_prestarted and the node is registered but still starting' },
  remote_bootstrap_failed: { kind: 'connection_failed', domain: 'runtime', retryable: true, meaning: 'ensure_started and the node did not become ready within remote_boot_lease_timeout_ms' },
  remote_rpc_timeout: { kind: 'connection_failed', domain: 'runtime', retryable: true, meaning: 'the node did not acknowledge the start within remote_rpc_timeout_ms' },
  remote_rpc_failed: { kind: 'connection_failed', domain: 'runtime', retryable: true, meaning: 'the node answered the start with an unexpected error' },
  remote_backend_start_failed: { kind: 'cli_not_found', domain: 'runtime', retryable: false, meaning: 'the node cannot start the CLI: binary missing (cli_not_found) or cwd missing, outside its root or not writable (config_invalid)' },
} as const satisfies Record<string, FailureSpec>;

export type RemoteStartFailure = keyof typeof REMOTE_START_FAILURES;

export function remoteFailure(reason: RemoteStartFailure, message: string, details: Record<string, unknown> = {}, kind?: ErrorKind): AsmError {
  const spec: FailureSpec = REMOTE_START_FAILURES[reason];
  return new AsmError(kind ?? spec.kind, message, { domain: spec.domain, retryable: spec.retryable, details: { ...details, reason } });
}
