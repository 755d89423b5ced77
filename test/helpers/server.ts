import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { inject } from 'vitest';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type DestinationStream } from 'pino';
import WebSocket from 'ws';
import { createApp, type AsmApp } from '../../src/app.js';
import { SdkLoader } from '../../src/backends/sdk-loader.js';
import { createClient, type AsmClient } from '../../src/client/index.js';
import { loadConfig } from '../../src/config.js';
import { buildServer } from '../../src/http/server.js';
import { createLogger } from '../../src/logger.js';
import { SANDBOX_ENV } from './sandbox.js';

/**
 * The two shapes of the service, for suites that run their scenarios in both: distributed mode keeps
 * its state in the test Redis (test/setup/redis.ts) under a key prefix of its own per server.
 */
export const SERVER_MODES: Array<[string, () => Record<string, string>]> = [
  ['embedded', () => ({})],
  ['distributed', () => ({ REDIS_URL: inject('asmTestRedisUrl'), ASM_REDIS_PREFIX: `t-${randomUUID().slice(0, 8)}` })],
];

export const FAKE_CLAUDE = new URL('../fixtures/bin/fake-claude.mjs', import.meta.url).pathname;

export interface TestServer {
  app: AsmApp;
  url: string;
  wsUrl: string;
  workspace: string;
  /** The generated client (src/client) on this server: paths, parameters and bodies typed by openapi.json. */
  client: AsmClient;
  /**
   * A raw JSON request (fetch), returning status and parsed body: for what the client's types refuse on
   * purpose (malformed input, unknown fields, wrong methods) and for routes outside openapi.json.
   */
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Reply>;
  /** A WebSocket on /v1/events with this query string; closed with the server. */
  stream(query: string, headers?: Record<string, string>): StreamClient;
  close(): Promise<void>;
}

export interface Reply {
  status: number;
  body: any;
  headers: Headers;
}

/**
 * A generated client's answer in the shape the suites assert on: the status, the body (the data, or
 * the error body; null when there is none) and the headers.
 */
export async function reply(call: Promise<{ data?: unknown; error?: unknown; response: Response }>): Promise<Reply> {
  const { data, error, response } = await call;
  return { status: response.status, body: data ?? error ?? null, headers: response.headers };
}

/**
 * The SDKs as a server sees them unless a test asks for the installed ones: absent. The fake CLIs
 * speak the core lane's protocol (argv included), so `lane: auto` must resolve to core for them,
 * as it does on an install without the optional SDK packages.
 */
const WITHOUT_SDKS = () => new SdkLoader((specifier) => Promise.reject(new Error(`${specifier} is not loaded by this test server (startServer sdks: true)`)));

/** A real ASM server on a free loopback port, with its own workspace root. */
export async function startServer(env: Record<string, string> = {}, options: { sdks?: boolean; logLines?: string[] } = {}): Promise<TestServer> {
  const workspace = mkdtempSync(join(tmpdir(), 'asm-test-'));
  const sandboxRoot = mkdtempSync(join(tmpdir(), 'asm-test-sandbox-'));
  const shadowRoot = mkdtempSync(join(tmpdir(), 'asm-test-shadow-'));
  const config = loadConfig({ ...SANDBOX_ENV, ASM_SANDBOX_ROOT: sandboxRoot, ASM_SHADOW_ROOT: shadowRoot, ASM_WORKSPACE_ROOT: workspace, ASM_CLAUDE_BIN: FAKE_CLAUDE, ASM_NODE_NAME: 'test-node', ...env });
  const sdks = options.sdks ? new SdkLoader() : WITHOUT_SDKS();
  // With logLines, every line the service logs (at debug and up, through its own redacting logger) is kept there.
  const log = options.logLines
    ? createLogger('debug', { write: (line: string) => void options.logLines!.push(line) } as DestinationStream)
    : pino({ level: process.env.ASM_TEST_LOG ?? 'silent' });
  const app = await createApp(config, log, { sdks });
  const server = await buildServer(app);
  await server.listen({ host: '127.0.0.1', port: 0 });
  const address = server.server.address() as { port: number };
  const url = `http://127.0.0.1:${address.port}`;
  const clients: StreamClient[] = [];
  return {
    app,
    url,
    wsUrl: url.replace('http', 'ws'),
    workspace,
    client: createClient({ baseUrl: url }),
    async request(method, path, body, headers = {}) {
      const response = await fetch(url + path, {
        method,
        headers: { ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        // not JSON (e.g. /metrics)
      }
      return { status: response.status, body: parsed, headers: response.headers };
    },
    stream(query, headers = {}) {
      const client = new StreamClient(`${url.replace('http', 'ws')}/v1/events?${query}`, headers);
      clients.push(client);
      return client;
    },
    async close() {
      for (const client of clients) client.close();
      await app.close();
      await server.close();
      rmSync(workspace, { recursive: true, force: true });
      rmSync(sandboxRoot, { recursive: true, force: true });
      rmSync(shadowRoot, { recursive: true, force: true });
    },
  };
}

/** A WebSocket client that collects frames and lets a test await the one it needs. */
export class StreamClient {
  readonly frames: any[] = [];
  private waiters: Array<{ test: (f: any) => boolean; resolve: (f: any) => void }> = [];
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.socket = new WebSocket(url, { headers });
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('error', reject);
    });
    this.closed = new Promise((resolve) => this.socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    this.socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      this.frames.push(frame);
      this.waiters = this.waiters.filter((w) => {
        if (!w.test(frame)) return true;
        w.resolve(frame);
        return false;
      });
    });
  }

  events(): any[] {
    return this.frames.filter((f) => f.type === 'event').map((f) => f.event);
  }

  next(test: (frame: any) => boolean, timeoutMs = 10_000): Promise<any> {
    const found = this.frames.find(test);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`)), timeoutMs);
      this.waiters.push({ test, resolve: (f) => (clearTimeout(timer), resolve(f)) });
    });
  }

  event(kind: string, extra: (e: any) => boolean = () => true): Promise<any> {
    return this.next((f) => f.type === 'event' && f.event.kind === kind && extra(f.event)).then((f) => f.event);
  }

  send(frame: unknown): void {
    this.socket.send(JSON.stringify(frame));
  }

  close(): void {
    this.socket.close();
  }
}

export const TERMINAL = new Set(['result', 'error', 'run_completed']);

/** Assert-friendly check of the stream invariants: seq strictly +1 within a session slice, one terminal last. */
export function terminalEvents(events: any[], runId: string): any[] {
  return events.filter((e) => e.run_id === runId && TERMINAL.has(e.kind));
}

/** Whether any process of this process group still exists. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}
