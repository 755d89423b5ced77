import { createHash } from 'node:crypto';
import { access, constants } from 'node:fs/promises';
import { AsmError } from '../errors/kinds.js';
import { remoteFailure, REMOTE_START_FAILURES } from '../errors/remote-start-failures.js';
import { resolveWorkspaceDir } from '../backends/workspace.js';
import { findBinary } from '../providers/registry.js';
import { OwnerUnreachable, type Cluster, type NodeSnapshot } from './cluster.js';
import type { RemoteOptions } from '../store/types.js';
import { remoteTarget } from './remote-options.js';

/**
 * Starting a `remote_node` run on a worker: the API side (`startOnNode`) and the worker side
 * (`preflightOnWorker`); each failure is a reason of src/errors/remote-start-failures.ts. The
 * sequence is connect → preflight → bootstrap → start:
 *
 * 1. connect: wait up to remote_connect_timeout_ms for a live worker of that name (or pool), one
 *    deadline for the whole placement (a pool's run passed over dead nodes does not wait anew);
 * 2. preflight, from the node's heartbeat: not draining, same cookie, same major.minor, provider there;
 * 3. bootstrap: a node still `starting` fails at once (require_prestarted) or is waited for up to
 *    remote_boot_lease_timeout_ms (ensure_started);
 * 4. start: a `start` control request; the worker checks the CLI and the cwd, queues the run and
 *    acknowledges within remote_rpc_timeout_ms. From then on the worker owns the run. A node that
 *    is registered but not listening (it died; its key lives until ASM_NODE_TTL_MS) fails a run
 *    sent to it by name; a pool's run is placed again on another node of the pool.
 */

/** Node snapshots re-read this often while waiting for a node to register or become ready. */
const POLL_MS = 100;

export interface StartOnNodeInput {
  cluster: Cluster;
  runId: string;
  provider: string;
  version: string;
  options: RemoteOptions;
  /** For a pool target: the node that ran this session's conversation so far, which holds the provider's files. */
  affinity: string | null;
  /** Aborted when the run is interrupted (or its lane times out) while it is being placed. */
  signal: AbortSignal;
}

/** Place the run on a node and have it acknowledged; returns the node. Throws a remoteFailure, or the signal's reason. */
export async function startOnNode(input: StartOnNodeInput): Promise<NodeSnapshot> {
  const { cluster, options } = input;
  // Instances found dead (registered, but nobody listens): a pool's run goes to another of its nodes.
  const dead = new Set<string>();
  // One deadline for the whole placement, however many dead nodes it passes on the way.
  const connectBy = Date.now() + options.remote_connect_timeout_ms;
  let node: NodeSnapshot;
  let reply;
  for (;;) {
    node = await findNode(input, dead, connectBy);
    try {
      reply = await cluster.send(node.id, { kind: 'start', runId: input.runId }, options.remote_rpc_timeout_ms);
      break;
    } catch (err) {
      // A worker killed moments ago stays registered until its key expires (ASM_NODE_TTL_MS): a run
      // placed by its pool need not fail for it. A named node, or the node of a conversation, has no stand-in.
      if (err instanceof OwnerUnreachable && namedNode(input) === null) {
        dead.add(node.id);
        continue;
      }
      throw startFailure(err, node, options.remote_rpc_timeout_ms);
    }
  }
  if (reply.ok) return node;
  const reason = reply.error.details?.reason;
  if (typeof reason === 'string' && Object.hasOwn(REMOTE_START_FAILURES, reason)) throw AsmError.fromBody(reply.error);
  throw remoteFailure('remote_rpc_failed', `node ${node.name} refused the start: ${reply.error.message}`, { node: node.name, error: reply.error });
}

/** The node a run must go to by name (the node asked for, or its conversation's), or null for any of its pool. */
function namedNode(input: StartOnNodeInput): string | null {
  const target = remoteTarget(input.options.remote_node);
  return target.kind === 'node' ? target.name : input.affinity;
}

function startFailure(err: unknown, node: NodeSnapshot, rpcTimeoutMs: number): AsmError {
  if (err instanceof OwnerUnreachable) {
    return remoteFailure('remote_connect_failed', `node ${node.name} (${node.id}) is registered but not listening`, { node: node.name });
  }
  if (err instanceof AsmError && err.kind === 'timeout') {
    return remoteFailure('remote_rpc_timeout', `node ${node.name} did not acknowledge the start within ${rpcTimeoutMs} ms`, { node: node.name });
  }
  return remoteFailure('remote_rpc_failed', `start on node ${node.name} failed: ${AsmError.from(err).message}`, { node: node.name });
}

async function findNode(input: StartOnNodeInput, dead: ReadonlySet<string>, connectBy: number): Promise<NodeSnapshot> {
  const { options, affinity } = input;
  const target = remoteTarget(options.remote_node);
  const named = namedNode(input);
  const what = target.kind === 'node' ? `node ${target.name}` : affinity ? `node ${affinity} of pool ${target.pool} (it holds this session's conversation)` : `pool ${target.pool}`;
  const matches = (n: NodeSnapshot) => n.role === 'worker' && !dead.has(n.id) && (named === null || n.name === named) && (target.kind === 'node' || n.pool === target.pool);
  let bootBy: number | undefined;
  for (;;) {
    input.signal.throwIfAborted();
    const found = (await input.cluster.nodes()).filter(matches);
    if (found.length > 0) {
      const usable = preflight(found, input, what);
      const ready = usable.filter((n) => n.state === 'ready');
      if (ready.length > 0) return leastLoaded(ready);
      if (options.remote_bootstrap_mode === 'require_prestarted') {
        throw remoteFailure('remote_not_ready', `${what} is registered but not ready (remote_bootstrap_mode require_prestarted)`, { node: named });
      }
      bootBy ??= Date.now() + options.remote_boot_lease_timeout_ms;
      if (Date.now() >= bootBy) {
        throw remoteFailure('remote_bootstrap_failed', `${what} did not become ready within ${options.remote_boot_lease_timeout_ms} ms`, { node: named });
      }
    } else if (Date.now() >= connectBy) {
      throw remoteFailure('remote_connect_timeout', `no live ${what} within ${options.remote_connect_timeout_ms} ms`, { node: named });
    }
    await sleep(POLL_MS, input.signal);
  }
}

/** The nodes that pass every check, or the failure of the check that left none (in the order of the steps above). */
function preflight(found: NodeSnapshot[], input: StartOnNodeInput, what: string): NodeSnapshot[] {
  const { options } = input;
  const open = found.filter((n) => n.state !== 'draining');
  if (open.length === 0) throw remoteFailure('remote_connect_failed', `${what} is draining: it takes no new runs`, { node: found[0].name });
  const cookie = cookieHash(options.remote_cookie);
  const trusted = open.filter((n) => (n.cookie ?? null) === cookie);
  if (trusted.length === 0) throw remoteFailure('cookie_conflict', `remote_cookie does not match the cookie of ${what}`, { node: open[0].name });
  const compatible = trusted.filter((n) => compatibleVersions(n.version, input.version));
  if (compatible.length === 0) {
    throw remoteFailure('remote_version_mismatch', `${what} runs ASM ${trusted[0].version}; this server runs ${input.version} (major.minor must match)`, {
      node: trusted[0].name,
      local: input.version,
      remote: trusted[0].version,
    });
  }
  // The same Node.js major (SPEC §7): a worker on another runtime may parse, spawn or time out differently.
  const sameRuntime = compatible.filter((n) => nodeMajor(n.node_version) === nodeMajor(process.versions.node));
  if (sameRuntime.length === 0) {
    throw remoteFailure('remote_version_mismatch', `${what} runs Node.js ${compatible[0].node_version}; this server runs Node.js ${process.versions.node} (the major must match)`, {
      node: compatible[0].name,
      local_node: process.versions.node,
      remote_node_version: compatible[0].node_version ?? null,
    });
  }
  const capable = sameRuntime.filter((n) => n.providers.includes(input.provider));
  if (capable.length === 0) {
    throw remoteFailure('remote_capability_mismatch', `${what} does not serve provider ${input.provider}`, {
      node: sameRuntime[0].name,
      missing: [input.provider],
      providers: sameRuntime[0].providers,
    });
  }
  return capable;
}

/** Lowest load relative to capacity; ties broken at random, so equal nodes share the work. */
function leastLoaded(nodes: NodeSnapshot[]): NodeSnapshot {
  const ratio = (n: NodeSnapshot) => n.load / Math.max(n.capacity, 1);
  const best = Math.min(...nodes.map(ratio));
  const tied = nodes.filter((n) => ratio(n) === best);
  return tied[Math.floor(Math.random() * tied.length)];
}

/** The seed's rule: compatible iff the first two numeric groups (major, minor) are equal; unparsable is incompatible. */
export function compatibleVersions(a: string, b: string): boolean {
  const groups = (v: string) => v.match(/\d+/g)?.slice(0, 2).map(Number) ?? [];
  const [x, y] = [groups(a), groups(b)];
  return x.length === 2 && y.length === 2 && x[0] === y[0] && x[1] === y[1];
}

/** The major of a Node.js version (`20.20.2` → `20`); a node of an older build that does not report it has none. */
function nodeMajor(version: string | undefined): string | null {
  return version?.split('.')[0] ?? null;
}

/** Nodes publish only a hash of their cookie; Redis readers never see the cookie itself. */
export function cookieHash(cookie: string | null | undefined): string | null {
  return cookie ? createHash('sha256').update(cookie).digest('hex') : null;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The worker's half of the start: can the CLI be started here, in a usable directory? Returns the
 * run's working directory on this node (remote_cwd inside the workspace root).
 */
export async function preflightOnWorker(input: { binary: string; workspaceRoot: string; remoteCwd: string | null; path: string }): Promise<string> {
  if (!(await findBinary(input.binary, input.path))) {
    throw remoteFailure('remote_backend_start_failed', `the CLI ${input.binary} is not installed on this node`, { binary: input.binary }, 'cli_not_found');
  }
  let cwd: string;
  try {
    cwd = await resolveWorkspaceDir(input.workspaceRoot, input.remoteCwd ?? undefined);
  } catch (err) {
    throw remoteFailure('remote_backend_start_failed', `remote_cwd: ${AsmError.from(err).message}`, { field: 'driver_opts.remote_cwd' }, 'config_invalid');
  }
  try {
    await access(cwd, constants.W_OK);
  } catch {
    throw remoteFailure('remote_backend_start_failed', `remote_cwd: ${cwd} is not writable on this node`, { field: 'driver_opts.remote_cwd', cwd }, 'config_invalid');
  }
  return cwd;
}
