/**
 * vitest globalSetup: starts a private, throw-away redis-server for the BullMQ lane-engine tests on
 * a free loopback port (never 6379), with persistence off and a temp working directory. The URL
 * reaches the tests as `inject('asmTestRedisUrl')` and as `process.env.ASM_TEST_REDIS_URL` (forks
 * inherit the environment). The server is stopped in teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    asmTestRedisUrl: string;
  }
}

function freePort(): Promise<number> {
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

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let port = await freePort();
  while (port === 6379) port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'asm-redis-'));
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1', '--dir', dir],
    { stdio: 'ignore' },
  );
  let exited = false;
  child.on('exit', () => (exited = true));
  child.on('error', () => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!(await ping(port))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(
        `redis-server did not answer PING on 127.0.0.1:${port}. The tests need redis-server on the PATH ` +
          `(Debian: apt-get install redis-server; .ci/run installs it).`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const url = `redis://127.0.0.1:${port}`;
  process.env.ASM_TEST_REDIS_URL = url;
  project.provide('asmTestRedisUrl', url);

  return async () => {
    if (!exited) {
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 3_000))]);
      if (!exited) child.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  };
}
