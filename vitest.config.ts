import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The real-CLI suite has its own command and config (vitest.agents.config.ts).
    exclude: [...configDefaults.exclude, 'test/agents/**'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    pool: 'forks',
    globalSetup: ['test/setup/redis.ts'],
  },
});
