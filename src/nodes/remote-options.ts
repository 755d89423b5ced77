import { relative } from 'node:path';
import { realRoot } from '../backends/workspace.js';
import type { AsmConfig } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { BootstrapMode, RemoteOptions, SessionRecord } from '../store/types.js';

/**
 * The effective remote payload of a `remote_node` run: the one place that merges and validates the
 * remote options (README "Worker nodes" lists them).
 *
 * Precedence, lowest to highest: server config (ASM_REMOTE_DEFAULTS) → session `driver_opts` → run
 * `driver_opts`. (The HTTP API has no top-level remote keys on a run, so per-run options and per-run
 * driver_opts are one layer here.) Keys this version does not
 * know are kept on the resolved payload, so a newer client's options travel to the node unchanged.
 * Nothing is resolved for a `local` run.
 */

export const REMOTE_DEFAULTS = {
  remote_cookie: null,
  remote_connect_timeout_ms: 5_000,
  remote_rpc_timeout_ms: 15_000,
  remote_boot_lease_timeout_ms: 10_000,
  remote_bootstrap_mode: 'require_prestarted',
  remote_cwd: null,
  remote_transport_call_timeout_ms: 5_000,
} as const satisfies Omit<RemoteOptions, 'remote_node'>;

const TIMEOUT_KEYS = ['remote_connect_timeout_ms', 'remote_rpc_timeout_ms', 'remote_boot_lease_timeout_ms', 'remote_transport_call_timeout_ms'] as const;
const BOOTSTRAP_MODES: readonly BootstrapMode[] = ['require_prestarted', 'ensure_started'];
/** A node or pool name: what `asm worker --name/--pool` accepts. */
export const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$/;
const POOL_PREFIX = 'pool:';
/** Longest timeout accepted: one day, so a typo cannot park a run forever. */
const MAX_TIMEOUT_MS = 86_400_000;

export type RemoteTarget = { kind: 'node'; name: string } | { kind: 'pool'; pool: string };

/**
 * The remote payload of a session's run (without `runOptions`: of the session itself, as the files
 * API addresses its worker), above one default of our own: without a remote_cwd the run works in the
 * session's directory taken relative to the workspace root, so nodes with the same layout under their
 * own root find it.
 */
export async function sessionRemoteOptions(config: Pick<AsmConfig, 'workspaceRoot' | 'remoteDefaults'>, session: SessionRecord, runOptions?: Record<string, unknown>): Promise<RemoteOptions> {
  const sessionDir = relative(await realRoot(config.workspaceRoot), session.cwd) || '.';
  return resolveRemoteOptions([{ remote_cwd: sessionDir }, config.remoteDefaults, session.driver_opts, runOptions]);
}

/** Merge the layers (lowest first) and validate; throws config_invalid naming the offending driver_opts field. */
export function resolveRemoteOptions(layers: ReadonlyArray<Record<string, unknown> | undefined>): RemoteOptions {
  const merged: Record<string, unknown> = { ...REMOTE_DEFAULTS };
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer ?? {})) if (value !== undefined) merged[key] = value;
  }
  if (typeof merged.remote_node !== 'string' || merged.remote_node.trim() === '') {
    throw invalid('remote_node', 'is required for execution_mode remote_node: a node name or pool:NAME');
  }
  merged.remote_node = merged.remote_node.trim();
  remoteTarget(merged.remote_node as string);
  for (const key of TIMEOUT_KEYS) {
    const value = merged[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_TIMEOUT_MS) {
      throw invalid(key, `must be a positive integer of milliseconds up to ${MAX_TIMEOUT_MS}, got ${JSON.stringify(value)}`);
    }
  }
  if (!BOOTSTRAP_MODES.includes(merged.remote_bootstrap_mode as BootstrapMode)) {
    throw invalid('remote_bootstrap_mode', `must be one of ${BOOTSTRAP_MODES.join(', ')}`);
  }
  for (const key of ['remote_cookie', 'remote_cwd'] as const) {
    const value = merged[key];
    if (value === null) continue;
    if (typeof value !== 'string' || value.trim() === '' || value.length > 4096) throw invalid(key, 'must be a non-empty string or null');
    merged[key] = value.trim();
  }
  return merged as RemoteOptions;
}

/** What `remote_node` names: one node, or a pool. */
export function remoteTarget(remoteNode: string): RemoteTarget {
  const pool = remoteNode.startsWith(POOL_PREFIX) ? remoteNode.slice(POOL_PREFIX.length) : null;
  const name = pool ?? remoteNode;
  if (!NODE_NAME.test(name)) throw invalid('remote_node', `"${remoteNode}" is not a node name or pool:NAME (letters, digits, _ . @ -)`);
  return pool === null ? { kind: 'node', name } : { kind: 'pool', pool };
}

function invalid(key: string, message: string): AsmError {
  return new AsmError('config_invalid', `driver_opts.${key}: ${message}`, { details: { field: `driver_opts.${key}` } });
}
