/**
 * A batched connection (RedisLink.connectBatched, the store's and the cluster's) against a private
 * redis-server: what one event-loop turn issues goes out in one write, and each turn's write goes
 * out while earlier commands are still unanswered.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { RedisLink } from '../../src/store/redis-link.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

let server: RedisServer;
let admin: Redis;

beforeAll(async () => {
  server = await startRedisServer();
  admin = new Redis(server.url);
});

afterAll(async () => {
  admin.disconnect();
  await server.dispose();
});

/** Redis's count of reads from its clients' sockets: one per batch of commands that arrived together. */
async function readsProcessed(): Promise<number> {
  return Number(/total_reads_processed:(\d+)/.exec(await admin.info('stats'))![1]);
}

describe('RedisLink.connectBatched', () => {
  it('sends the commands issued in one turn in one write, and answers each', async () => {
    // The link's stall check PINGs each connection once per commandTimeoutMs (2 s by default): a PING
    // between the two counts is one read more (a CI run saw 3). Here it comes a minute apart.
    const link = new RedisLink({ url: server.url, commandTimeoutMs: 60_000 });
    const connection = link.connectBatched();
    try {
      await link.ready(5_000);
      const before = await readsProcessed();
      // 100 commands, one after another in one turn: sent one write each, they would reach Redis over
      // several of its reads, each write a system call of its own.
      const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => connection.incrby('batched:count', i)));
      const after = await readsProcessed();
      // The INFO that read `before` is read by Redis after it answered; the batch is one read more.
      expect(after - before).toBe(2);
      expect(replies.at(-1)).toBe((99 * 100) / 2);
      expect(new Set(replies).size).toBe(100);
    } finally {
      await link.close();
    }
  });

  it('sends a later turn\'s command while an earlier one is unanswered', async () => {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: server.port });
    const link = new RedisLink({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 10_000 });
    const connection = link.connectBatched();
    try {
      await link.ready(5_000);
      // Redis still reads what this connection sends, but its replies no longer arrive.
      proxy.withholdReplies();
      const first = connection.set('unanswered:first', '1');
      first.catch(() => undefined);
      await new Promise((resolve) => setImmediate(resolve));
      const second = connection.set('unanswered:second', '1');
      second.catch(() => undefined);
      // Held until the first is answered (ioredis's auto-pipelining), the second would never arrive.
      await waitFor(async () => (await admin.get('unanswered:second')) === '1', 'the second command to reach Redis');
      expect(await admin.get('unanswered:first')).toBe('1');
    } finally {
      // The proxy first: a QUIT would wait for its withheld reply.
      await proxy.close();
      await link.close();
    }
  });
});
