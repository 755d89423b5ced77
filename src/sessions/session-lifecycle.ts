import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { LOCAL_SURFACE } from '../backends/surfaces.js';
import { resolveWorkspaceDir } from '../backends/workspace.js';
import type { AsmConfig } from '../config.js';
import { AsmError, badField } from '../errors/kinds.js';
import type { Cluster } from '../nodes/cluster.js';
import { resolveRemoteOptions } from '../nodes/remote-options.js';
import { filesNodeOf, RemoteWorkspace } from '../nodes/worker-files.js';
import type { ProviderDefinition } from '../providers/types.js';
import type { CreateSessionBody } from '../schemas/api.js';
import type { SessionRecord, Store } from '../store/types.js';
import type { TenantDirectory } from '../tenants.js';
import type { ControlRouter } from './control.js';
import { checkMcpServers, redactMcpServers } from './mcp-servers.js';
import type { Placement } from './placement.js';
import type { Quotas } from './quotas.js';
import { sessionAgentOptions } from './run-options.js';
import { withSessionLock } from './session-lock.js';
import { assertOneWorkspace, makeSessionWorkspace, remoteWorkspacePlace } from './session-workspace.js';
import { waitForRun } from './wait-for-run.js';

export const SESSION_DEFAULTS = {
  lane: 'auto',
  execution_mode: 'local',
  max_concurrent_runs: 1,
  max_queued_runs: 10,
  approval_timeout_ms: 120_000,
  run_deadline_ms: 600_000,
} as const;

export interface SessionLifecycleDeps {
  config: AsmConfig;
  store: Store;
  cluster: Cluster;
  providers: Map<string, ProviderDefinition>;
  tenants: TenantDirectory;
  placement: Placement;
  quotas: Quotas;
  control: ControlRouter;
  log: Logger;
  /** ASM_PREWARM: a new session whose runs take the core lane here, for its CLI to be started ahead of its first run (RunExecutor.prewarm). */
  prewarm?: (session: SessionRecord) => void;
}

/**
 * Creating a session (every option checked, so a session that could never run is refused) and
 * closing one. An open session holds one of its tenant's `sessions` (quotas.ts) until it is closed;
 * ASM_MAX_SESSIONS bounds the server's sessions, closed ones included, as well.
 */
export class SessionLifecycle {
  constructor(private readonly deps: SessionLifecycleDeps) {}

  /** `requestId`: the request that creates it, named on the lines written about it (README "Request ids"). */
  async create(tenant: string, body: CreateSessionBody, requestId?: string): Promise<SessionRecord> {
    const { config, placement, providers, tenants, quotas, log } = this.deps;
    const provider = providers.get(body.provider);
    if (!provider) {
      throw badField('provider', `unknown provider "${body.provider}"; known: ${[...providers.keys()].sort().join(', ')}`);
    }
    if (config.disabledProviders.has(provider.name)) {
      throw new AsmError('forbidden', `provider: ${provider.name} is disabled on this server (ASM_DISABLED_PROVIDERS)`, {
        details: { field: 'provider' },
      });
    }
    tenants.assertProvider(tenant, provider.name);
    const agentOptions = sessionAgentOptions(provider, body);
    const queue = body.queue ?? provider.defaultQueue;
    placement.assertRunQueue(queue);
    const executionMode = body.execution_mode ?? SESSION_DEFAULTS.execution_mode;
    const requested = body.lane ?? SESSION_DEFAULTS.lane;
    const placed = await placement.resolve(provider, { requested, executionMode, queue, providerPermissionMode: agentOptions.provider_permission_mode });
    const executionSurface = body.execution_surface ?? LOCAL_SURFACE;
    placement.assertSurface(executionSurface, executionMode, placed);
    if (executionMode === 'remote_node') await placement.assertRemoteCli(provider, resolveRemoteOptions([config.remoteDefaults, body.driver_opts]).remote_node);
    const mcpServers = checkMcpServers(body.mcp_servers, provider, executionSurface, executionMode === 'local', config);
    assertOneWorkspace(body);
    const id = `ses_${randomUUID()}`;
    const warm = warmOption(provider, body, { backend: placed.backend, executionMode, surface: executionSurface.kind }, config.limits.warmIdleMs);
    const session: SessionRecord = {
      id,
      tenant,
      provider: provider.name,
      lane: body.lane ?? SESSION_DEFAULTS.lane,
      execution_mode: executionMode,
      execution_surface: executionSurface,
      ...(await this.workspaceOf(tenant, id, body, executionMode)),
      ...agentOptions,
      queue,
      max_concurrent_runs: body.max_concurrent_runs ?? SESSION_DEFAULTS.max_concurrent_runs,
      max_queued_runs: body.max_queued_runs ?? SESSION_DEFAULTS.max_queued_runs,
      approval_timeout_ms: body.approval_timeout_ms ?? SESSION_DEFAULTS.approval_timeout_ms,
      run_deadline_ms: body.run_deadline_ms ?? SESSION_DEFAULTS.run_deadline_ms,
      idle_timeout_ms: body.idle_timeout_ms ?? config.limits.idleTimeoutMs,
      ...warm,
      metadata: body.metadata ?? {},
      mcp_servers: redactMcpServers(mcpServers),
      mcp_server_config: mcpServers,
      state: 'open',
      provider_session_id: null,
      granted_tools: [],
      last_seq: 0,
      created_at: new Date().toISOString(),
      closed_at: null,
    };
    // A workspace made here goes with a session that is not created; one on a worker stays, noted.
    const dropWorkspace = async () => {
      if (!body.workspace) return;
      if (executionMode === 'local') await rm(session.cwd, { recursive: true, force: true });
      else log.warn({ sessionId: session.id, reqId: requestId, node: session.driver_opts.remote_node, remoteCwd: session.driver_opts.remote_cwd }, 'the session was not created; its workspace stays on the worker');
    };
    try {
      await quotas.take(tenant, 'sessions', session.id);
    } catch (err) {
      await dropWorkspace();
      throw err;
    }
    try {
      await this.storeBelowLimit(session, requestId);
    } catch (err) {
      await quotas.release(tenant, 'sessions', session.id);
      await dropWorkspace();
      throw err;
    }
    log.info({ sessionId: session.id, reqId: requestId, provider: session.provider, tenant }, 'session created');
    if (placed.backend === 'core' && executionMode === 'local') this.deps.prewarm?.(session);
    return session;
  }

  /**
   * The session's `cwd` and `driver_opts`: its `cwd` in its tenant's root, or a workspace of its own,
   * made here for a local session, or by the worker a remote_node session names (through the
   * worker's files endpoint), whose runs then work in it (their remote_cwd).
   */
  private async workspaceOf(tenant: string, id: string, body: CreateSessionBody, executionMode: string): Promise<Pick<SessionRecord, 'cwd' | 'driver_opts'>> {
    const { config, cluster, tenants } = this.deps;
    const tenantRoot = tenants.get(tenant).workspaceRoot;
    const driverOpts = body.driver_opts ?? {};
    if (!body.workspace) return { cwd: await resolveWorkspaceDir(tenantRoot, body.cwd), driver_opts: driverOpts };
    if (executionMode === 'local') return { cwd: await makeSessionWorkspace(tenantRoot, id, body.workspace, config.workspaces), driver_opts: driverOpts };
    const { cwd, remoteCwd } = await remoteWorkspacePlace(config.workspaceRoot, tenantRoot, id);
    const options = resolveRemoteOptions([config.remoteDefaults, driverOpts, { remote_cwd: remoteCwd }]);
    await new RemoteWorkspace(await filesNodeOf(cluster, options, 'workspace'), remoteCwd, id).create(body.workspace);
    return { cwd, driver_opts: { ...driverOpts, remote_cwd: remoteCwd } };
  }

  /**
   * Stored below ASM_MAX_SESSIONS, or refused: closed sessions give way to new ones, oldest first, so
   * only open ones fill the server. The store checks the limit as it adds (SessionStore.create), so
   * creates at once, here or in other processes, never pass it; one whose room another create took
   * after an eviction evicts again.
   */
  private async storeBelowLimit(session: SessionRecord, requestId: string | undefined): Promise<void> {
    const { config, store, log } = this.deps;
    while (!(await store.sessions.create(session, config.limits.maxSessions))) {
      const evicted = await store.evictOldestClosed();
      if (!evicted) {
        throw new AsmError('at_capacity', `the server holds its maximum of ${config.limits.maxSessions} open sessions (ASM_MAX_SESSIONS)`);
      }
      log.info({ sessionId: evicted, reqId: requestId }, 'evicted the oldest closed session to make room');
    }
  }

  /** Close: refuse new runs, end queued runs as interrupted, interrupt active ones, wait for them. `requestId` as for create. */
  async close(id: string, requestId?: string): Promise<SessionRecord> {
    const { config, store, cluster, control, log } = this.deps;
    const session = await store.sessions.get(id);
    if (!session) throw new AsmError('not_found', `session ${id} not found`);
    if (session.state === 'closed') return session;
    await withSessionLock(cluster, id, () => store.sessions.update(id, { state: 'closing' }));
    const runs = await store.runs.listUnfinishedBySession(id);
    await Promise.all(runs.map((r) => control.interrupt(r.id).catch(() => undefined)));
    const { interruptGraceMs, killGraceMs, exitGraceMs } = config.limits;
    const bound = interruptGraceMs + killGraceMs + exitGraceMs + 1_000;
    await Promise.all(runs.map((r) => waitForRun(store, r.id, bound, id)));
    const closed = await store.sessions.update(id, {
      state: 'closed',
      closed_at: new Date().toISOString(),
      last_seq: await store.events.lastSeq(id),
    });
    await this.deps.quotas.release(closed.tenant, 'sessions', id);
    log.info({ sessionId: id, reqId: requestId, interruptedRuns: runs.length }, 'session closed');
    return closed;
  }
}

/**
 * `warm` and `warm_idle_ms`: a session may keep its agent's process between runs where the process is
 * this node's own: a provider with the warm capability, on the core lane, run locally and here (a
 * remote_node run goes to whichever worker takes it, so there is no process to keep).
 */
function warmOption(
  provider: ProviderDefinition,
  body: CreateSessionBody,
  placed: { backend: string; executionMode: string; surface: string },
  defaultIdleMs: number,
): Pick<SessionRecord, 'warm' | 'warm_idle_ms'> {
  if (!body.warm) {
    if (body.warm_idle_ms !== undefined) throw warmRefused('warm_idle_ms', 'only with warm: true');
    return { warm: false, warm_idle_ms: null };
  }
  if (!provider.capabilities.includes('warm')) throw warmRefused('warm', `${provider.name} cannot keep its process between runs (no warm capability)`);
  if (placed.backend !== 'core') throw warmRefused('warm', `only on the core lane (this session's runs take the ${placed.backend} lane)`);
  if (placed.executionMode !== 'local') throw warmRefused('warm', `only with execution_mode local (got ${placed.executionMode})`);
  if (placed.surface !== 'local_subprocess') throw warmRefused('warm', `only with a local_subprocess execution_surface (got ${placed.surface})`);
  // One process holds the conversation: the session's runs take turns on it.
  if ((body.max_concurrent_runs ?? 1) > 1) throw warmRefused('max_concurrent_runs', 'a warm session runs one run at a time (1)');
  return { warm: true, warm_idle_ms: body.warm_idle_ms ?? defaultIdleMs };
}

function warmRefused(field: string, message: string): AsmError {
  return new AsmError('config_invalid', `${field}: ${message}`, { details: { field } });
}
