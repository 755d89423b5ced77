/**
 * A private, throw-away redis-server on a free loopback port (never 6379), with persistence off and
 * its own temp working directory. Used by the tests' globalSetup, by tests that need a server they
 * can stop and restart, and by `npm run bench -- bullmq`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import type { Redis } from 'ioredis';
import { join } from 'node:path';

export interface RedisServer {
  url: string;
  port: number;
  /** Stops the server (SIGTERM, then SIGKILL after 3 s); `start` brings it back on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: the server keeps its connections open but answers nothing while frozen. */
  freeze(): void;
  thaw(): void;
  /** Stops the server and deletes its directory. */
  dispose(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let data = '';
    socket.setTimeout(500, () => (socket.destroy(), resolve(false)));
    socket.on('error', () => resolve(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.includes('\r\n')) {
        socket.end();
        resolve(data.startsWith('+PONG'));
      }
    });
  });
}

export async function startRedisServer(): Promise<RedisServer> {
  let port = await freePort();
  while (port === 6379) port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'asm-redis-'));
  let child: ChildProcess | undefined;
  let exited = true;

  const start = async () => {
    const current = spawn(
      'redis-server',
      ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1', '--dir', dir],
      { stdio: 'ignore' },
    );
    child = current;
    exited = false;
    current.on('exit', () => current === child && (exited = true));
    current.on('error', () => current === child && (exited = true));
    const deadline = Date.now() + 10_000;
    while (!(await ping(port))) {
      if (exited || Date.now() > deadline) {
        current.kill('SIGKILL');
        throw new Error(
          `redis-server did not answer PING on 127.0.0.1:${port}. redis-server must be on the PATH ` +
            `(Debian: apt-get install redis-server; .ci/run installs it).`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  const stop = async () => {
    const current = child;
    if (current === undefined || exited) return;
    current.kill('SIGCONT');
    const gone = new Promise<void>((resolve) => current.once('exit', () => resolve()));
    current.kill('SIGTERM');
    await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 3_000))]);
    if (!exited) {
      current.kill('SIGKILL');
      await gone;
    }
  };

  try {
    await start();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    freeze: () => child?.kill('SIGSTOP'),
    thaw: () => child?.kill('SIGCONT'),
    dispose: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Deletes every key under a queue prefix, so that tests sharing one server leave nothing behind. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== '0');
}
