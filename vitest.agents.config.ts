import { defineConfig } from 'vitest/config';

/**
 * `npm run test:agents`: the service driving the real agent CLIs (installed by
 * scripts/install-agents.ts) against the loopback model server in test/agents. Kept out of
 * `npm test`, which must not need the CLIs. Files run one at a time: each real CLI is a heavy
 * process and the machines are small.
 */
export default defineConfig({
  test: {
    include: ['test/agents/**/*.test.ts'],
    testTimeout: 90_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
