/**
 * The signals stream that BullMQ lane engines tell each other about jobs on (src/lanes/bullmq/signals.ts),
 * on the shared test redis-server, with one engine's reader behind a real TCP proxy
 * (test/helpers/tcp-proxy.ts).
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { RedisCalls } from '../../src/lanes/bullmq/redis-calls.js';
import { SignalStream, type Signal } from '../../src/lanes/bullmq/signals.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

const url = inject('asmTestRedisUrl') ?? process.env.ASM_TEST_REDIS_URL;
if (!url) throw new Error('no test Redis: is test/setup/redis.ts registered as globalSetup?');

const cleanup: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup.length = 0;
});

function client(address: string): Redis {
  const redis = new Redis(address, { maxRetriesPerRequest: null });
  redis.on('error', () => undefined);
  return redis;
}

function stream(key: string, engineId: string, reader: Redis, stallMs: number, onSignal: (signal: Signal) => void = () => undefined): SignalStream {
  const writer = client(url!);
  const signals = new SignalStream({ reader, writer, key, engineId, calls: new RedisCalls(writer, 1_000), stallMs, onSignal, afterRead: () => undefined });
  cleanup.push(() => {
    signals.stop();
    signals.disconnect();
    writer.disconnect();
  });
  return signals;
}

describe('SignalStream', () => {
  it('hears the signals sent after Redis stopped answering its reader: the stalled read is made again on a new connection, and nothing is lost or heard twice', async () => {
    const key = `{asm-signals-${randomUUID().slice(0, 8)}}::signals`;
    const redisUrl = new URL(url!);
    const proxy: TcpProxy = await startTcpProxy({ host: redisUrl.hostname, port: Number(redisUrl.port) });
    cleanup.push(() => proxy.close());
    const heard: Signal[] = [];
    const stallMs = 300;
    const listener = stream(key, 'listener', client(`redis://127.0.0.1:${proxy.port}`), stallMs, (signal) => heard.push(signal));
    const sender = stream(key, 'sender', client(url!), stallMs);
    await Promise.all([listener.ready, sender.ready]);
    cleanup.push(async () => void (await client(url!).del(key)));

    sender.send(['w', 'work', 'before']);
    await waitFor(() => heard.length === 1, 'the first signal');

    // The listener's blocked read reached Redis; its answer, and everything after it, no longer arrives.
    proxy.withholdReplies();
    const sentAt = Date.now();
    sender.send(['w', 'work', 'after']);
    await waitFor(() => heard.length === 2, 'the signal sent while the reader was stalled', 10_000);
    // One block (1 s), the stall bound, and the reconnect; slack for a loaded machine.
    expect(Date.now() - sentAt).toBeLessThan(1_000 + stallMs + 3_000);
    expect(heard).toEqual([
      ['w', 'work', 'before'],
      ['w', 'work', 'after'],
    ]);
  });
});
