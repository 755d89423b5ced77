import pino, { type Logger } from 'pino';
import type { AsmConfig } from './config.js';
import { CoreBackend } from './backends/core.js';
import { createInProcessEngine } from './lanes/index.js';
import { DEFAULT_LANES, mergeLanes } from './lanes/policies.js';
import type { LaneEngine } from './lanes/types.js';
import { loadProviders } from './providers/registry.js';
import type { ProviderDefinition } from './providers/types.js';
import { SessionService } from './sessions/service.js';
import { createMemoryStore } from './store/memory.js';
import type { Store } from './store/types.js';

/** Everything one ASM process runs, built in one place: the composition root for serve, tests and benches. */
export interface AsmApp {
  config: AsmConfig;
  logger: Logger;
  store: Store;
  engine: LaneEngine;
  providers: Map<string, ProviderDefinition>;
  sessions: SessionService;
  startedAt: Date;
  /** False once shutdown began. */
  isReady(): boolean;
  /** Stop intake, interrupt and drain running work, release everything. Idempotent. */
  close(): Promise<void>;
}

export const VERSION = '0.1.0';

export async function createApp(config: AsmConfig, logger: Logger = pino({ level: config.logLevel })): Promise<AsmApp> {
  const providers = await loadProviders();
  const store = createMemoryStore({ eventsPerSession: config.limits.eventsPerSession });
  const engine = createInProcessEngine({
    lanes: mergeLanes(DEFAULT_LANES, config.laneOverrides),
    globalConcurrency: config.globalConcurrency,
    dlqSize: config.dlqSize,
  });
  const sessions = new SessionService({ config, store, engine, providers, backend: new CoreBackend(config.limits), logger });
  sessions.registerCommands();
  await engine.start();

  let ready = true;
  let closing: Promise<void> | undefined;
  return {
    config,
    logger,
    store,
    engine,
    providers,
    sessions,
    startedAt: new Date(),
    isReady: () => ready,
    close() {
      closing ??= (async () => {
        ready = false;
        logger.info('shutting down: intake stopped, interrupting runs');
        await engine.shutdown();
        await sessions.interruptAll('shutdown');
        await engine.drain(config.limits.shutdownDrainMs).catch((err) => logger.warn({ err }, 'drain did not finish in time'));
        await engine.close();
        sessions.close();
        await store.close();
        logger.info('shutdown complete');
      })();
      return closing;
    },
  };
}
