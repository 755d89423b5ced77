/**
 * The BullMQ lane engine against the shared conformance suite, on the private redis-server that
 * test/setup/redis.ts starts. Every engine gets a unique prefix, so tests never see each other's
 * jobs; its keys are deleted after the test.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, inject } from 'vitest';
import { Redis } from 'ioredis';
import { BullMQLaneEngine } from '../../src/lanes/bullmq-engine.js';
import { deletePrefix } from '../helpers/redis-server.js';
import { laneEngineConformance } from './conformance.js';

const url = inject('asmTestRedisUrl') ?? process.env.ASM_TEST_REDIS_URL;
if (!url) throw new Error('no test Redis: is test/setup/redis.ts registered as globalSetup?');
const admin = new Redis(url, { maxRetriesPerRequest: null });
let prefixes: string[] = [];

afterEach(async () => {
  // Runs after the suite's own afterEach has closed the engines.
  for (const prefix of prefixes) await deletePrefix(admin, prefix);
  prefixes = [];
});

afterAll(async () => {
  await admin.quit();
});

laneEngineConformance('BullMQLaneEngine', (options) => {
  const prefix = `{asm-test-${randomUUID().slice(0, 8)}}`;
  prefixes.push(prefix);
  return new BullMQLaneEngine({ ...options, connection: url, prefix });
});
