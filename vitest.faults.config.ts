import { defineConfig } from 'vitest/config';

/**
 * The fault suite (`npm run test:faults`): misbehaving CLIs, the fuzzer, clients, process faults in
 * distributed mode (a partition, clock skew, a Redis outage). Its files run one at a time,
 * because they measure the service's memory and scan /proc for processes a run left behind.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 30_000,
    pool: 'forks',
    fileParallelism: false,
    globalSetup: ['test/setup/redis.ts'],
  },
});
