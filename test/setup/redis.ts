/**
 * vitest globalSetup: starts a private, throw-away redis-server for the BullMQ lane-engine tests
 * (test/helpers/redis-server.ts). The URL reaches the tests as `inject('asmTestRedisUrl')` and as
 * `process.env.ASM_TEST_REDIS_URL` (forks inherit the environment). The server is stopped in teardown.
 */
import type { TestProject } from 'vitest/node';
import { startRedisServer } from '../helpers/redis-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    asmTestRedisUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startRedisServer();
  process.env.ASM_TEST_REDIS_URL = server.url;
  project.provide('asmTestRedisUrl', server.url);
  return () => server.dispose();
}
