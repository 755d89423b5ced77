import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AsmConfig } from './config.js';
import { ConfigError } from './config-error.js';
import { CoreBackend } from './backends/core.js';
import { WarmProcesses } from './backends/warm-processes.js';
import { AgentMemoryGate } from './backends/agent-memory.js';
import { SdkBackend } from './backends/sdk.js';
import { SdkLoader } from './backends/sdk-loader.js';
import { createSandbox } from './backends/sandbox.js';
import { useSpawner } from './backends/spawn-child.js';
import type { Sandbox } from './backends/types.js';
import { createInProcessEngine } from './lanes/index.js';
import { embeddedInfrastructure, type Infrastructure } from './infrastructure.js';
import { createLogger } from './logger.js';
import { DEFAULT_LANES, mergeLanes } from './lanes/policies.js';
import type { EngineOptions, LaneEngine } from './lanes/types.js';
import type { Cluster, SelfReport } from './nodes/cluster.js';
import { loadProviders, missingClisOf } from './providers/registry.js';
import type { ProviderDefinition } from './providers/types.js';
import { cookieHash } from './nodes/remote-start.js';
import { WORKER_LANE } from './nodes/accept.js';
import { SessionService } from './sessions/service.js';
import type { Store } from './store/types.js';
import { TenantDirectory } from './tenants.js';
import { VERSION } from './version.js';

export { VERSION };

/** Everything one ASM process runs, built in one place: the composition root for serve, tests and benches. */
export interface AsmApp {
  config: AsmConfig;
  logger: Logger;
  store: Store;
  engine: LaneEngine;
  cluster: Cluster;
  providers: Map<string, ProviderDefinition>;
  /** Who may call, and what each tenant may do (ASM_TENANTS_FILE, ASM_API_KEYS). */
  tenants: TenantDirectory;
  /** Which providers' SDKs load here (the SDK lane). */
  sdks: SdkLoader;
  /** The sandbox the CLIs of this node run in. */
  sandbox: Sandbox;
  sessions: SessionService;
  /** Admission by memory: runs wait here while the node's agents use ASM_MAX_AGENT_MEMORY_MB or more. */
  memory: AgentMemoryGate;
  mode: 'embedded' | 'distributed';
  /** Distributed mode: the connection for counters every process shares (request rate limits). */
  redis?: Infrastructure['redis'];
  startedAt: Date;
  /** False once shutdown began. */
  isReady(): boolean;
  /** Stop intake, interrupt and drain running work, release everything. Idempotent. */
  close(): Promise<void>;
}


/** Parts a caller may supply instead of the defaults (tests: which SDKs "are installed"). */
export interface AppParts {
  sdks?: SdkLoader;
}

export async function createApp(config: AsmConfig, logger: Logger = createLogger(config.logLevel), parts: AppParts = {}): Promise<AsmApp> {
  const { worker } = config;
  if (worker && !config.redis) throw new Error('asm worker needs REDIS_URL: workers take their runs from a distributed deployment');
  // One choice for the whole process: how its CLIs and git start.
  const { fallback } = useSpawner(config.spawner);
  if (fallback) logger.warn(`ASM_SPAWNER=posix_spawn: ${fallback}; child processes start with fork instead`);
  const providers = await loadProviders();
  const unknown = worker?.providers?.filter((p) => !providers.has(p)) ?? [];
  if (unknown.length) throw new Error(`--providers: unknown ${unknown.join(', ')}; known: ${[...providers.keys()].sort().join(', ')}`);
  assertPrewarm(config.prewarm, providers);
  const tenants = await TenantDirectory.open(config.tenants, {
    known: [...providers.keys()],
    disabled: config.disabledProviders,
    workspaceRoot: config.workspaceRoot,
    prepareRoots: !worker,
  });
  // Checked before anything listens or takes work: a node whose sandbox does not work refuses to start.
  const sandbox = await createSandbox(config.sandbox, logger);
  const engineOptions: EngineOptions = {
    lanes: mergeLanes(DEFAULT_LANES, config.laneOverrides),
    globalConcurrency: config.globalConcurrency,
    dlqSize: config.dlqSize,
  };
  let sessions: SessionService | undefined;
  const served = [...providers.keys()].filter((p) => !config.disabledProviders.has(p) && (worker?.providers ?? [p]).includes(p));
  // Looked for once: a CLI installed later shows after a restart; a run still checks at spawn.
  const missingClis = await missingClisOf(served.map((name) => providers.get(name)!), config.binaries);
  // Idle warm agent processes count in the node's load: they hold memory like a run does.
  const warm = new WarmProcesses(config.limits.maxWarmProcesses, config.prewarm);
  const report: SelfReport = () => ({
    name: config.nodeName,
    role: worker ? 'worker' : 'api',
    version: VERSION,
    node_version: process.versions.node,
    providers: served,
    missing_clis: missingClis,
    capacity: worker?.capacity ?? engineOptions.lanes.reduce((sum, l) => sum + l.maxConcurrency, 0),
    load: ((worker ? sessions?.acceptedRuns() : sessions?.activeRuns()) ?? 0) + warm.size,
    pool: worker?.pool ?? 'default',
    cookie: cookieHash(worker?.cookie),
    files_url: worker?.files?.url ?? null,
    files_token: worker?.files?.token ?? null,
    sandbox: sandbox.kind,
  });
  // The instance id is unique per process, so a restarted process never inherits the runs its predecessor owned.
  const self = `${config.nodeName}-${randomUUID().slice(0, 8)}`;
  const infra: Infrastructure = config.redis
    ? // Loaded only when used: embedded mode never loads ioredis or BullMQ.
      await (await import('./distributed.js')).connectDistributed(
        config,
        config.redis,
        engineOptions,
        self,
        report,
        logger,
        worker && createInProcessEngine(workerEngineOptions(worker.capacity)),
      )
    : embeddedInfrastructure(config, engineOptions, self, report);
  const { store, engine, cluster } = infra;
  const sdks = parts.sdks ?? new SdkLoader();
  const core = new CoreBackend(config.limits, sandbox, warm);
  const backends = { core, sdk: new SdkBackend(sdks, config.limits, sandbox) };
  const memory = new AgentMemoryGate(config.limits, () => core.processGroups(), warm);
  sessions = new SessionService({ config, store, engine, cluster, providers, tenants, backends, memory, sdks, logger });
  sessions.registerCommands();
  await engine.start();
  await sessions.start();
  // A worker registers as starting (sessions.start() heartbeats) and takes runs from here on.
  if (worker) cluster.setState('ready');

  // A closed session's sandbox folders and shadow repository go. Each process sweeps its own
  // ASM_SANDBOX_ROOT and ASM_SHADOW_ROOT, wherever its runs ran.
  const sweep = async () => {
    // A closed session's warm process first: it runs in the folders released below.
    await stopClosedWarm(warm, store);
    await sweepClosed(sandbox, store);
    await sweepClosed(sessions.shadow, store);
  };
  const sandboxSweep = setInterval(() => void sweep().catch((err) => logger.warn({ err }, 'sandbox sweep failed')), config.sandbox.sweepMs);
  sandboxSweep.unref();

  let ready = true;
  let closing: Promise<void> | undefined;
  return {
    config,
    logger,
    store,
    engine,
    cluster,
    providers,
    tenants,
    sdks,
    sandbox,
    sessions,
    memory,
    mode: config.redis ? 'distributed' : 'embedded',
    redis: infra.redis,
    startedAt: new Date(),
    isReady: () => ready,
    close() {
      closing ??= (async () => {
        ready = false;
        sessions.stopIntake();
        clearInterval(sandboxSweep);
        cluster.setState('draining');
        await engine.shutdown();
        const drain = () => engine.drain(config.limits.shutdownDrainMs).catch((err) => logger.warn({ err }, 'drain did not finish in time'));
        if (worker) {
          // A worker finishes the runs it accepted (draining: it takes no new ones), then interrupts what is left.
          logger.info('shutting down: draining accepted runs');
          await drain();
          await sessions.interruptAll('shutdown');
        } else {
          logger.info('shutting down: intake stopped, interrupting runs');
          await sessions.interruptAll('shutdown');
          await drain();
        }
        await engine.close();
        await warm.stopAll();
        sessions.close();
        await sessions.shadow.idle();
        await cluster.close();
        await store.close();
        await infra.close();
        await sandbox.close();
        logger.info('shutdown complete');
      })();
      return closing;
    },
  };
}

/** Removes the folders of the sessions the store knows as closed (a session unknown here may be another deployment's). */
async function sweepClosed(folders: Pick<Sandbox, 'sessions' | 'release'>, store: Store): Promise<void> {
  for (const sessionId of await folders.sessions()) {
    if ((await store.sessions.get(sessionId))?.state === 'closed') await folders.release(sessionId);
  }
}

/** ASM_PREWARM names only providers whose capabilities list `prewarm`. */
function assertPrewarm(prewarm: Record<string, number>, providers: Map<string, ProviderDefinition>): void {
  const able = [...providers.values()].filter((p) => p.capabilities.includes('prewarm')).map((p) => p.name);
  for (const name of Object.keys(prewarm)) {
    if (!able.includes(name)) throw new ConfigError('ASM_PREWARM', `${providers.has(name) ? `${name} cannot be prewarmed` : `unknown provider ${name}`}; these can: ${able.join(', ')}`);
  }
}

/** Stops the kept processes of sessions that are no longer open (closed through another process, which could not reach them). */
async function stopClosedWarm(warm: WarmProcesses, store: Store): Promise<void> {
  for (const sessionId of warm.sessions()) {
    if ((await store.sessions.get(sessionId))?.state !== 'open') warm.stopSession(sessionId);
  }
}

/** A worker's own queue: the runs handed to it, at most `capacity` executing at once, the rest FIFO. */
function workerEngineOptions(capacity: number): EngineOptions {
  return { lanes: [{ id: WORKER_LANE, priority: 0, minConcurrency: 0, maxConcurrency: capacity }] };
}
