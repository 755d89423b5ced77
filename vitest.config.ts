import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The real-CLI suite and the fault suite have their own commands and configs
    // (vitest.agents.config.ts, vitest.faults.config.ts).
    exclude: [...configDefaults.exclude, 'test/agents/**', 'test/faults/**'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    pool: 'forks',
    globalSetup: ['test/setup/redis.ts'],
  },
});
