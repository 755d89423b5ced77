/**
 * A private, throw-away redis-server on a free loopback port (never 6379), in its own temp directory.
 * Used by the tests' globalSetup, by tests that take Redis away and bring it back (stop/start keep the
 * port and directory, so an append-only file survives), by tests of special servers (cluster mode,
 * TLS: pass `args`), by the AOF crash test (`crash`, SIGKILL), by the partition test (which binds a veth address too), and by the `bullmq` and
 * `nodes` benchmarks.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Redis } from 'ioredis';
import { join } from 'node:path';
import { freePort } from './ports.js';

export interface RedisServer {
  url: string;
  port: number;
  dir: string;
  /** What the server printed since it was last started, for skip and failure messages. */
  log(): string;
  /** Stops the server (SIGTERM, so it writes its append-only file; SIGKILL after 3 s). */
  stop(): Promise<void>;
  /** SIGKILL: a crash, which writes nothing more (what an `appendfsync` policy keeps is what survives). */
  crash(): Promise<void>;
  /** Starts it again on the same port and directory. */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: the server keeps its connections open but answers nothing while frozen. */
  freeze(): void;
  thaw(): void;
  /** Stops the server and deletes its directory. */
  dispose(): Promise<void>;
}

export interface RedisServerOptions {
  /** The server's arguments; the default is a plain server on `port` with persistence off. */
  args?: (port: number, dir: string) => string[];
  /** Addresses it listens on; the default is the loopback only. `url` is always the loopback one. */
  bind?: string[];
}

const plain = (port: number) => ['--port', String(port), '--save', '', '--appendonly', 'no'];

export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  let port = await freePort();
  while (port === 6379) port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'asm-redis-'));
  const args = ['--bind', ...(options.bind ?? ['127.0.0.1']), '--dir', dir, ...(options.args ?? plain)(port, dir)];
  let child: ChildProcess | undefined;
  let output = '';

  // Readiness is the server's own log line, which also holds for a TLS-only server that a plain PING cannot reach.
  const start = async () => {
    output = '';
    const current = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = current;
    const ready = new Promise<void>((resolve, reject) => {
      const collect = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) resolve();
      };
      current.stdout!.on('data', collect);
      current.stderr!.on('data', collect);
      current.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${output.trim().split('\n').slice(-3).join(' | ')}`)));
      current.once('error', (err) =>
        reject(new Error(`redis-server could not start (${err.message}). It must be on the PATH (Debian: apt-get install redis-server; .ci/run installs it).`)),
      );
    });
    const timer = setTimeout(() => current.kill('SIGKILL'), 10_000);
    try {
      await ready;
    } finally {
      clearTimeout(timer);
    }
  };

  const end = async (signal: 'SIGTERM' | 'SIGKILL') => {
    const current = child;
    child = undefined;
    if (current === undefined || current.exitCode !== null || current.signalCode !== null) return;
    current.kill('SIGCONT');
    const gone = new Promise<void>((resolve) => current.once('exit', () => resolve()));
    current.kill(signal);
    const timer = setTimeout(() => current.kill('SIGKILL'), 3_000);
    await gone;
    clearTimeout(timer);
  };
  const stop = () => end('SIGTERM');

  try {
    await start();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    log: () => output,
    stop,
    crash: () => end('SIGKILL'),
    start,
    freeze: () => child?.kill('SIGSTOP'),
    thaw: () => child?.kill('SIGCONT'),
    dispose: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Deletes every key under a prefix, so that tests sharing one server leave nothing behind. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== '0');
}

export interface TlsRedisServer {
  /** Undefined when this redis-server was built without TLS; `missing` says why. */
  server: RedisServer | undefined;
  missing: string;
  /** The CA that signed the server's certificate (for ASM_REDIS_TLS_CA). */
  ca: string;
  dispose(): Promise<void>;
}

/** A TLS-only redis-server with a certificate for 127.0.0.1 signed by a throw-away CA (openssl). */
export async function startTlsRedisServer(): Promise<TlsRedisServer> {
  const certs = mkdtempSync(join(tmpdir(), 'asm-tls-'));
  const ca = join(certs, 'ca.crt');
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: certs, stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=asm-test-ca');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  writeFileSync(join(certs, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '1', '-extfile', 'san.ext');
  let server: RedisServer | undefined;
  let missing = '';
  try {
    server = await startRedisServer({
      args: (port) => [
        '--port', '0', '--tls-port', String(port), '--save', '', '--appendonly', 'no', '--tls-auth-clients', 'no',
        '--tls-cert-file', join(certs, 'server.crt'), '--tls-key-file', join(certs, 'server.key'), '--tls-ca-cert-file', ca,
      ],
    });
  } catch (err) {
    if (!/tls/i.test(String(err))) throw err;
    missing = `this redis-server cannot serve TLS (${String(err)})`;
  }
  return {
    server,
    missing,
    ca,
    dispose: async () => {
      await server?.dispose();
      rmSync(certs, { recursive: true, force: true });
    },
  };
}
