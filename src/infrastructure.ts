import type { Redis } from 'ioredis';
import type { AsmConfig } from './config.js';
import { createInProcessEngine } from './lanes/index.js';
import type { EngineOptions, LaneEngine } from './lanes/types.js';
import type { Cluster, SelfReport } from './nodes/cluster.js';
import { LocalCluster } from './nodes/local.js';
import { createMemoryStore } from './store/memory.js';
import type { Store } from './store/types.js';

/** The parts that differ between embedded mode (this process only) and distributed mode (distributed.ts, Redis). */
export interface Infrastructure {
  store: Store;
  engine: LaneEngine;
  cluster: Cluster;
  /** Distributed mode: a fail-fast connection for counters shared by every process (request rate limits). */
  redis?: Redis;
  /** Connections to release after everything else has closed. */
  close(): Promise<void>;
}

/** Embedded mode: state in memory, lanes in process, a cluster of one. */
export function embeddedInfrastructure(config: AsmConfig, engineOptions: EngineOptions, self: string, report: SelfReport): Infrastructure {
  return {
    store: createMemoryStore({ eventsPerSession: config.limits.eventsPerSession }),
    engine: createInProcessEngine(engineOptions),
    cluster: new LocalCluster(self, report),
    close: async () => {},
  };
}
