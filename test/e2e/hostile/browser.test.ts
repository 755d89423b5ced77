import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { reply, startServer, type TestServer } from '../../helpers/server.js';

/**
 * Hostile tenant B in A's browser: B's web page, open in a tab while A runs ASM on the quick start
 * (no keys, loopback), tries to reach A's server. A page may open a WebSocket to any origin, and
 * through DNS rebinding its own name may come to point at 127.0.0.1; it gets nothing either way.
 */

const ALLOWED = 'https://console.example.com';
const PAGE = 'https://attacker.example';
const KEY_A = 'key-a-0123456789abcdef';

type Upgrade = { opened: true; firstFrame: any } | { opened: false; status: number; body: any };

/** Open a WebSocket on /v1/events with these headers: its first frame, or the HTTP answer that refused the upgrade. */
function upgrade(server: TestServer, headers: Record<string, string>, query = ''): Promise<Upgrade> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${server.wsUrl}/v1/events?${query}`, { headers });
    socket.once('message', (data) => {
      socket.close();
      resolve({ opened: true, firstFrame: JSON.parse(data.toString()) });
    });
    socket.once('unexpected-response', (_request, response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk));
      response.on('end', () => resolve({ opened: false, status: response.statusCode!, body: JSON.parse(text) }));
    });
    socket.once('error', (err) => {
      if (!err.message.startsWith('Unexpected server response')) reject(err);
    });
  });
}

/** An HTTP request with a Host header of the caller's choosing (fetch sets its own). */
function requestWithHost(server: TestServer, method: string, path: string, host: string, body?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const target = new URL(server.url);
    const req = httpRequest(
      { host: target.hostname, port: target.port, method, path, headers: { host, ...(body !== undefined && { 'content-type': 'application/json' }) } },
      (response) => {
        let text = '';
        response.on('data', (chunk: Buffer) => (text += chunk));
        response.on('end', () => resolve({ status: response.statusCode!, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

describe("B's page opens A's WebSocket", () => {
  let server: TestServer;
  let keyed: TestServer;
  beforeAll(async () => {
    server = await startServer({ ASM_ALLOWED_ORIGINS: ALLOWED });
    keyed = await startServer({ ASM_ALLOWED_ORIGINS: ALLOWED, ASM_API_KEYS: `${KEY_A}:tenant-a` });
  });
  afterAll(async () => {
    await server?.close();
    await keyed?.close();
  });

  it("is refused with 403 before the upgrade, the error naming the page's Origin", async () => {
    const answer = await upgrade(server, { origin: PAGE });
    expect(answer).toMatchObject({ opened: false, status: 403, body: { error: { kind: 'forbidden', details: { field: 'headers.origin', origin: PAGE } } } });
    expect((answer as { body: any }).body.error.message).toContain(PAGE);
    expect((answer as { body: any }).body.error.message).toContain('ASM_ALLOWED_ORIGINS');
  });

  it("is refused even with A's key in the query", async () => {
    const answer = await upgrade(keyed, { origin: PAGE }, `token=${KEY_A}`);
    expect(answer).toMatchObject({ opened: false, status: 403, body: { error: { kind: 'forbidden', details: { field: 'headers.origin' } } } });
  });

  it('a page on an origin the operator listed streams', async () => {
    expect(await upgrade(server, { origin: ALLOWED })).toMatchObject({ opened: true, firstFrame: { type: 'subscribed' } });
    expect(await upgrade(keyed, { origin: ALLOWED }, `token=${KEY_A}`)).toMatchObject({ opened: true, firstFrame: { type: 'subscribed' } });
  });

  it('a client that sends no Origin (not a browser) streams', async () => {
    expect(await upgrade(server, {})).toMatchObject({ opened: true, firstFrame: { type: 'subscribed' } });
  });
});

describe("B's page reaches A's keyless server through DNS rebinding", () => {
  let server: TestServer;
  let keyed: TestServer;
  const rebound = () => `rebind.attacker.example:${new URL(server.url).port}`;
  beforeAll(async () => {
    server = await startServer();
    keyed = await startServer({ ASM_API_KEYS: `${KEY_A}:tenant-a` });
  });
  afterAll(async () => {
    await server?.close();
    await keyed?.close();
  });

  it('gets 403 naming the Host on every route, and creates nothing', async () => {
    for (const [method, path, body] of [
      ['GET', '/v1/sessions'],
      ['POST', '/v1/sessions', { provider: 'shell' }],
      ['GET', '/metrics'],
      ['GET', '/healthz'],
    ] as const) {
      const res = await requestWithHost(server, method, path, rebound(), body);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.body.error).toMatchObject({ kind: 'forbidden', details: { field: 'headers.host' } });
      expect(res.body.error.message).toContain('rebind.attacker.example');
    }
    expect((await reply(server.client.GET('/v1/sessions'))).body.sessions).toEqual([]);
  });

  it('gets 403 on the WebSocket, with or without an Origin', async () => {
    for (const headers of [{ host: rebound() }, { host: rebound(), origin: `http://${rebound()}` }] as Array<Record<string, string>>) {
      expect(await upgrade(server, headers)).toMatchObject({ opened: false, status: 403, body: { error: { kind: 'forbidden' } } });
    }
  });

  it('localhost, 127.0.0.1 and [::1], with any port or none, are answered', async () => {
    for (const host of ['localhost', 'LOCALHOST:1234', `127.0.0.1:${new URL(server.url).port}`, '[::1]:8787', '[::1]']) {
      expect((await requestWithHost(server, 'GET', '/v1/sessions', host)).status, host).toBe(200);
    }
    expect(await upgrade(server, { host: 'localhost' })).toMatchObject({ opened: true });
  });

  it('a server with keys answers any Host (it may sit behind a proxy; its keys guard it)', async () => {
    expect((await requestWithHost(keyed, 'GET', '/healthz', 'asm.internal.example')).status).toBe(200);
  });
});
