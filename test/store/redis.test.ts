/**
 * The Redis store against the shared store contract on the private redis-server of test/setup/redis.ts,
 * then what only Redis has: cluster slots, an unreachable server, ACL users and TLS. Each deployment
 * gets a unique key prefix, whose keys are deleted after the test.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, inject } from 'vitest';
import { Redis } from 'ioredis';
import { createRedisStore } from '../../src/store/redis.js';
import { storeContract } from './contract.js';

const url = inject('asmTestRedisUrl') ?? process.env.ASM_TEST_REDIS_URL;
if (!url) throw new Error('no test Redis: is test/setup/redis.ts registered as globalSetup?');
const admin = new Redis(url, { maxRetriesPerRequest: null });
let prefixes: string[] = [];

afterEach(async () => {
  // Runs after the contract's own afterEach has closed the stores.
  for (const prefix of prefixes.splice(0)) {
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await admin.del(...keys);
    } while (cursor !== '0');
  }
});

afterAll(async () => {
  await admin.quit();
});

function uniquePrefix(): string {
  const prefix = `asmtest-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  return prefix;
}

storeContract('redis', ({ eventsPerSession }) => {
  const prefix = uniquePrefix();
  return { open: () => createRedisStore({ url, prefix, eventsPerSession }) };
});
