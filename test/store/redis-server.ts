/**
 * A redis-server of a test's own (the shared one of test/setup/redis.ts must not be stopped or
 * reconfigured): on a free loopback port, in its own temp directory, startable again on the same port
 * and directory, so a test can take Redis away and bring it back with its data.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

async function unusedPort(): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as AddressInfo;
  probe.close();
  await once(probe, 'close');
  return port;
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'asm-store-redis-'));
}

export class TestRedisServer {
  private child: ChildProcess | undefined;
  private output = '';

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly args: string[],
  ) {}

  /** `args(port, dir)` are the server's arguments; it must log "Ready to accept connections". */
  static async start(args: (port: number, dir: string) => string[]): Promise<TestRedisServer> {
    const port = await unusedPort();
    const dir = tempDir();
    const server = new TestRedisServer(port, dir, args(port, dir));
    await server.restart();
    return server;
  }

  /** What the server printed since it was last started, for skip and failure messages. */
  get log(): string {
    return this.output;
  }

  async restart(): Promise<void> {
    this.output = '';
    const child = spawn('redis-server', ['--bind', '127.0.0.1', '--dir', this.dir, ...this.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const ready = new Promise<void>((resolve, reject) => {
      const collect = (chunk: Buffer) => {
        this.output += chunk.toString();
        if (this.output.includes('Ready to accept connections')) resolve();
      };
      child.stdout!.on('data', collect);
      child.stderr!.on('data', collect);
      child.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${this.output.trim().split('\n').slice(-3).join(' | ')}`)));
    });
    const timeout = setTimeout(() => child.kill('SIGKILL'), 10_000);
    try {
      await ready;
    } finally {
      clearTimeout(timeout);
    }
  }

  /** SIGTERM: Redis writes its append-only file and exits. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
