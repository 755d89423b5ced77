import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient } from '../../../src/client/index.js';
import { freePort } from '../../helpers/ports.js';
import { FAKE_CLAUDE } from '../../helpers/server.js';
import { serveProcess, untilServing, type ServeProcess } from '../../helpers/processes.js';
import { startRedisServer, type RedisServer } from '../../helpers/redis-server.js';
import { waitFor } from '../../helpers/wait.js';

/**
 * Hostile tenant B and the service's logs: whoever reads the logs (an operator's log pipeline, a
 * shared log store) must find no key and no Redis password there, and nothing B chose to write
 * into them as it was sent. Each test runs `asm serve` as an operator does and reads its output.
 */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const NOT_A_KEY = 'guessed-key-55aa55aa55aa';

const started: ServeProcess[] = [];
const cleanups: Array<() => Promise<void> | void> = [];

async function serve(env: Record<string, string>): Promise<{ process: ServeProcess; url: string }> {
  const workspace = mkdtempSync(join(tmpdir(), 'asm-logs-'));
  cleanups.push(() => rmSync(workspace, { recursive: true, force: true }));
  const port = await freePort();
  const server = serveProcess({ ASM_WORKSPACE_ROOT: workspace, ASM_PORT: String(port), ASM_API_KEYS: `${KEY_A}:tenant-a,${KEY_B}:tenant-b`, ...env });
  started.push(server);
  return { process: server, url: `http://127.0.0.1:${port}` };
}

afterEach(async () => {
  for (const server of started.splice(0)) server.child.kill('SIGKILL');
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** Resolves once the WebSocket opened or was refused; either way the request was logged. */
function openSocket(url: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.once('open', () => (socket.close(), resolve()));
    socket.once('error', () => resolve());
  });
}

describe('keys and request ids in the logs', () => {
  it('no key appears, whether sent as ?token= or Authorization, right or wrong; a bad x-request-id is replaced, not echoed', async () => {
    // The fake claude (test/fixtures/bin): the session that the socket below subscribes to must exist.
    const { process: server, url } = await serve({ ASM_CLAUDE_BIN: FAKE_CLAUDE });
    await untilServing(url);
    const created = await createClient({ baseUrl: url, apiKey: KEY_A }).POST('/v1/sessions', { body: { provider: 'claude' } });
    expect(created.response.status, JSON.stringify(created.error)).toBe(201);
    const session = created.data!;

    // Raw fetch: keys in query strings, wrong keys, a malformed path and forged request ids, on purpose.
    await fetch(`${url}/v1/sessions?token=${KEY_B}`);
    await fetch(`${url}/v1/sessions?limit=5&token=${NOT_A_KEY}&x=1`);
    await fetch(`${url}/v1/sessions`, { headers: { authorization: `Bearer ${KEY_B}` } });
    await fetch(`${url}/v1/sessions`, { headers: { authorization: `Bearer ${NOT_A_KEY}` } });
    await fetch(`${url}/v1/%zz?token=${KEY_B}`);
    await fetch(`${url}/v1/no-such-route?access_token=${KEY_B}`);
    await openSocket(`${url.replace('http', 'ws')}/v1/events?session_id=${session.id}&token=${KEY_A}`);
    await openSocket(`${url.replace('http', 'ws')}/v1/events?token=${NOT_A_KEY}`);

    const badIds = ['forged id {"level":60,"msg":"fake"}', `x${'a'.repeat(200)}`, 'ünïcode-id', ''];
    for (const badId of badIds) {
      const res = await fetch(`${url}/healthz`, { headers: { 'x-request-id': badId } });
      expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    }
    const good = await fetch(`${url}/healthz`, { headers: { 'x-request-id': 'trace-42:span.7_a' } });
    expect(good.headers.get('x-request-id')).toBe('trace-42:span.7_a');
    await waitFor(() => server.output().includes('"reqId":"trace-42:span.7_a"'), 'the last request in the log');

    const log = server.output();
    for (const secret of [KEY_A, KEY_B, NOT_A_KEY]) expect(log).not.toContain(secret);
    expect(log).toContain('token=[redacted]');
    expect(log).not.toMatch(/"authorization":/i);
    for (const badId of badIds.filter(Boolean)) expect(log).not.toContain(badId);
    expect(log).not.toContain('"msg":"fake"');
  });
});

describe('Redis failures in the logs', () => {
  const PASSWORD = 'redis-password-7c1e9d0b4a';
  let redis: RedisServer;
  afterEach(async () => {
    await redis?.dispose();
  });

  it('a refused login is logged with its command name but not its arguments (the password)', async () => {
    redis = await startRedisServer({ args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'no', '--requirepass', PASSWORD] });
    const redisUrl = `redis://default:${PASSWORD}@127.0.0.1:${redis.port}`;
    // claude installed (the fake), so that the create below reaches the store rather than stopping at cli_not_found.
    const { process: server, url } = await serve({ REDIS_URL: redisUrl, ASM_REDIS_PREFIX: 'logs', ASM_CLAUDE_BIN: FAKE_CLAUDE });
    await untilServing(url, '/readyz');

    // The password changes under the running service, and its connections are dropped: each
    // reconnection logs in with the old one and is refused.
    const admin = new Redis(redisUrl);
    cleanups.push(() => admin.disconnect());
    await admin.config('SET', 'requirepass', 'a-new-password-0000');
    await admin.client('KILL', 'TYPE', 'normal');
    await admin.client('KILL', 'TYPE', 'pubsub');
    await waitFor(() => server.output().includes('Redis connection failed'), 'the refused login in the log', 10_000);
    // A store call while Redis refuses: answered 503, and logged without arguments either.
    const { response } = await createClient({ baseUrl: url, apiKey: KEY_A }).POST('/v1/sessions', { body: { provider: 'claude', metadata: { note: 'a-value-of-a' } } });
    expect(response.status).toBe(503);
    await waitFor(() => server.output().includes('"statusCode":503'), 'the refused store call in the log');

    const log = server.output();
    expect(log).toContain('"command":{"name":"auth"}');
    expect(log).not.toContain('"args"');
    expect(log).not.toContain(PASSWORD);
    expect(log).not.toContain('a-value-of-a');
  });

  it('a wrong password at start-up is reported without it', async () => {
    redis = await startRedisServer({ args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'no', '--requirepass', PASSWORD] });
    const wrong = 'wrong-password-3f8a2b6c';
    const { process: server } = await serve({ REDIS_URL: `redis://default:${wrong}@127.0.0.1:${redis.port}` });
    expect(await server.exited).toBe(1);
    const log = server.output();
    expect(log).toContain('WRONGPASS');
    expect(log).toContain('"command":{"name":"auth"}');
    expect(log).not.toContain('"args"');
    expect(log).not.toContain(wrong);
  });
});
