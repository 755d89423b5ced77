import { randomUUID } from 'node:crypto';
import pino, { type Logger } from 'pino';
import type { AsmConfig } from './config.js';
import { CoreBackend } from './backends/core.js';
import { SdkBackend } from './backends/sdk.js';
import { SdkLoader } from './backends/sdk-loader.js';
import { createInProcessEngine } from './lanes/index.js';
import { DEFAULT_LANES, mergeLanes } from './lanes/policies.js';
import type { EngineOptions, LaneEngine } from './lanes/types.js';
import type { Cluster, SelfReport } from './nodes/cluster.js';
import { LocalCluster } from './nodes/local.js';
import { loadProviders } from './providers/registry.js';
import type { ProviderDefinition } from './providers/types.js';
import { SessionService } from './sessions/service.js';
import { createMemoryStore } from './store/memory.js';
import type { Store } from './store/types.js';
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
  /** Which providers' SDKs load here (the SDK lane). */
  sdks: SdkLoader;
  sessions: SessionService;
  mode: 'embedded' | 'distributed';
  startedAt: Date;
  /** False once shutdown began. */
  isReady(): boolean;
  /** Stop intake, interrupt and drain running work, release everything. Idempotent. */
  close(): Promise<void>;
}


/** The parts that differ between embedded mode (this process only) and distributed mode (Redis). */
export interface Infrastructure {
  store: Store;
  engine: LaneEngine;
  cluster: Cluster;
  /** Connections to release after everything else has closed. */
  close(): Promise<void>;
}

/** Parts a caller may supply instead of the defaults (tests: which SDKs "are installed"). */
export interface AppParts {
  sdks?: SdkLoader;
}

export async function createApp(config: AsmConfig, logger: Logger = pino({ level: config.logLevel }), parts: AppParts = {}): Promise<AsmApp> {
  const providers = await loadProviders();
  const engineOptions: EngineOptions = {
    lanes: mergeLanes(DEFAULT_LANES, config.laneOverrides),
    globalConcurrency: config.globalConcurrency,
    dlqSize: config.dlqSize,
  };
  let sessions: SessionService | undefined;
  const report: SelfReport = () => ({
    name: config.nodeName,
    role: 'api',
    version: VERSION,
    providers: [...providers.keys()].filter((p) => !config.disabledProviders.has(p)),
    capacity: engineOptions.lanes.reduce((sum, l) => sum + l.maxConcurrency, 0),
    load: sessions?.activeRuns() ?? 0,
    pool: 'default',
  });
  // The instance id is unique per process, so a restarted process never inherits the runs its predecessor owned.
  const self = `${config.nodeName}-${randomUUID().slice(0, 8)}`;
  const infra: Infrastructure = config.redis
    ? // Loaded only when used: embedded mode never loads ioredis or BullMQ.
      await (await import('./distributed.js')).connectDistributed(config, config.redis, engineOptions, self, report, logger)
    : {
        store: createMemoryStore({ eventsPerSession: config.limits.eventsPerSession }),
        engine: createInProcessEngine(engineOptions),
        cluster: new LocalCluster(self, report),
        close: async () => {},
      };
  const { store, engine, cluster } = infra;
  const sdks = parts.sdks ?? new SdkLoader();
  const backends = { core: new CoreBackend(config.limits), sdk: new SdkBackend(sdks, config.limits) };
  sessions = new SessionService({ config, store, engine, cluster, providers, backends, sdks, logger });
  sessions.registerCommands();
  await engine.start();
  await sessions.start();

  let ready = true;
  let closing: Promise<void> | undefined;
  return {
    config,
    logger,
    store,
    engine,
    cluster,
    providers,
    sdks,
    sessions,
    mode: config.redis ? 'distributed' : 'embedded',
    startedAt: new Date(),
    isReady: () => ready,
    close() {
      closing ??= (async () => {
        ready = false;
        cluster.setState('draining');
        logger.info('shutting down: intake stopped, interrupting runs');
        await engine.shutdown();
        await sessions.interruptAll('shutdown');
        await engine.drain(config.limits.shutdownDrainMs).catch((err) => logger.warn({ err }, 'drain did not finish in time'));
        await engine.close();
        sessions.close();
        await cluster.close();
        await store.close();
        await infra.close();
        logger.info('shutdown complete');
      })();
      return closing;
    },
  };
}
