import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { reply, SERVER_MODES, startServer, type TestServer } from '../../helpers/server.js';
import { tenant, tenantsFile } from '../../helpers/tenants.js';
import { waitFor } from '../../helpers/wait.js';

/**
 * Tenant B against the capacity the tenants share: it tries to hold more sessions, runs, event
 * streams and metadata than its quotas allow, on both processes of a deployment at once, and gets
 * 429 (413 for metadata) naming the quota, while A keeps working. In distributed mode the two
 * servers share one Redis prefix, so a quota must hold across them; embedded mode is one server.
 */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const A = { authorization: `Bearer ${KEY_A}` };
const B = { authorization: `Bearer ${KEY_B}` };
const QUOTAS_B = { sessions: 3, active_runs: 1, queued_runs: 1, connections: 2 };

const servers: TestServer[] = [];
const workspaces: string[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const dir of workspaces.splice(0)) rmSync(dir, { recursive: true, force: true });
});

type Response = { status: number; body: any };

function expectQuotaExceeded(res: Response, quota: string, limit: number) {
  expect(res.status, JSON.stringify(res.body)).toBe(429);
  expect(res.body.error).toMatchObject({ kind: 'quota_exceeded', details: { quota, limit } });
  expect(res.body.error.message).toContain(`"quotas.${quota}"`);
  expect(res.body.error.message).toContain('ASM_TENANTS_FILE');
}

/** Both processes of a deployment (the one server, in embedded mode), with tenants A and B and one workspace root. */
async function deployment(modeEnv: () => Record<string, string>, env: Record<string, string> = {}): Promise<[TestServer, TestServer]> {
  const workspace = mkdtempSync(join(tmpdir(), 'asm-quotas-'));
  workspaces.push(workspace);
  const shared: Record<string, string> = {
    ...modeEnv(),
    ASM_WORKSPACE_ROOT: workspace,
    ASM_TENANTS_FILE: tenantsFile([tenant('tenant-a', KEY_A, { providers: ['shell'] }), tenant('tenant-b', KEY_B, { providers: ['shell'], quotas: QUOTAS_B })]),
    ...env,
  };
  const one = await startServer(shared);
  servers.push(one);
  if (!shared.REDIS_URL) return [one, one];
  const two = await startServer(shared);
  servers.push(two);
  return [one, two];
}

async function session(server: TestServer, headers: Record<string, string>): Promise<string> {
  const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers }));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id;
}

/** A WebSocket upgrade the server refuses: its status and error body. */
function refusedUpgrade(server: TestServer, headers: Record<string, string>): Promise<Response> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${server.wsUrl}/v1/events`, { headers });
    socket.once('open', () => reject(new Error('the upgrade was accepted')));
    socket.once('unexpected-response', (_request, response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }));
    });
  });
}

/** An SSE stream of a run's events: the response, and how to close it. */
async function sse(server: TestServer, runId: string, headers: Record<string, string>): Promise<Response & { close(): void }> {
  const abort = new AbortController();
  const response = await fetch(`${server.url}/v1/runs/${runId}/events`, { headers: { ...headers, accept: 'text/event-stream' }, signal: abort.signal });
  const body = response.headers.get('content-type')?.includes('json') ? await response.json() : null;
  return { status: response.status, body, close: () => abort.abort() };
}

describe.each(SERVER_MODES)('hostile tenant: quotas (%s)', (_mode, modeEnv) => {
  it("B holds at most its sessions quota, even creating on both processes at once; A still gets the server's room", async () => {
    const [one, two] = await deployment(modeEnv, { ASM_MAX_SESSIONS: '6' });
    const attempts = await Promise.all(Array.from({ length: 8 }, (_, i) => reply((i % 2 ? one : two).client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B }))));
    expect(attempts.filter((r) => r.status === 201)).toHaveLength(3);
    for (const refused of attempts.filter((r) => r.status !== 201)) expectQuotaExceeded(refused, 'sessions', 3);

    // B filled only its own quota: the server's other three places are A's.
    for (let i = 0; i < 3; i++) await session(i % 2 ? one : two, A);

    // A closed session no longer counts.
    const mine = attempts.find((r) => r.status === 201)!.body.id;
    expect((await reply(two.client.DELETE('/v1/sessions/{id}', { params: { path: { id: mine } }, headers: B }))).body.state).toBe('closed');
    expect((await reply(one.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B }))).status).toBe(201);
    expectQuotaExceeded(await reply(two.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B })), 'sessions', 3);
  });

  it('B runs at most its active_runs and queues at most its queued_runs across its sessions, on both processes', async () => {
    const [one, two] = await deployment(modeEnv);
    const [s1, s2, s3] = [await session(one, B), await session(two, B), await session(one, B)];

    // Two sessions with free slots, one on each process, at once: only one run gets the tenant's one active slot.
    const raced = await Promise.all([
      reply(one.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s1 } }, body: { prompt: 'sleep 30' }, headers: B })),
      reply(two.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s2 } }, body: { prompt: 'sleep 30' }, headers: B })),
    ]);
    const accepted = raced.findIndex((r) => r.status === 202);
    expect(accepted, JSON.stringify(raced.map((r) => r.body))).toBeGreaterThanOrEqual(0);
    expectQuotaExceeded(raced[1 - accepted], 'active_runs', 1);
    const running = raced[accepted].body;
    const [busy, idle] = accepted === 0 ? [s1, s2] : [s2, s1];

    // Behind the running one, in its own session: one may wait, the second is over queued_runs.
    const queued = await reply(two.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: busy } }, body: { prompt: 'echo waited' }, headers: B }));
    expect(queued.status).toBe(202);
    expectQuotaExceeded(await reply(one.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: busy } }, body: { prompt: 'echo more' }, headers: B })), 'queued_runs', 1);
    // A free session slot does not help B past its tenant's active_runs.
    expectQuotaExceeded(await reply(two.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s3 } }, body: { prompt: 'echo' }, headers: B })), 'active_runs', 1);

    const a = await session(two, A);
    const ofA = await reply(one.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: a } }, body: { prompt: 'echo a', wait: true }, headers: A }));
    expect(ofA.body.state, JSON.stringify(ofA.body)).toBe('completed');

    // The running run ends; the waiting one takes its slot and runs; then the slot is free again.
    expect((await reply(one.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: running.id } }, headers: B }))).status).toBe(202);
    const waited = await one.app.sessions.waitForRun(queued.body.id, 10_000);
    expect(waited.state).toBe('completed');
    const next = await reply(two.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: idle } }, body: { prompt: 'echo next', wait: true }, headers: B }));
    expect(next.body.state, JSON.stringify(next.body)).toBe('completed');
  });

  it('B opens at most its connections quota of WebSocket and SSE streams across both processes; the next is refused before it starts', async () => {
    const [one, two] = await deployment(modeEnv);
    const s = await session(one, B);
    const run = (await reply(one.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s } }, body: { prompt: 'sleep 30' }, headers: B }))).body;

    const first = one.stream(`session_id=${s}`, B);
    const second = two.stream('', B);
    await Promise.all([first.opened, second.opened]);
    expectQuotaExceeded(await refusedUpgrade(one, B), 'connections', 2);
    expectQuotaExceeded(await refusedUpgrade(two, B), 'connections', 2);
    expectQuotaExceeded(await sse(two, run.id, B), 'connections', 2);

    // A's streams are its own.
    const ofA = one.stream('', A);
    await ofA.opened;

    // A stream that closes gives its place back: an SSE stream takes it, and holds it while open.
    first.close();
    const stream = await waitFor(async () => {
      const attempt = await sse(one, run.id, B);
      return attempt.status === 200 ? attempt : undefined;
    }, 'a closed WebSocket to release its place');
    expectQuotaExceeded(await refusedUpgrade(two, B), 'connections', 2);
    stream.close();
    const third = await waitFor(async () => {
      const client = two.stream('', B);
      return client.opened.then(() => client, () => undefined);
    }, 'a closed SSE stream to release its place');
    expect(third.socket.readyState).toBe(WebSocket.OPEN);
  });

  it("B's 900 KB of metadata is refused with 413 naming metadata, on a session and on a run", async () => {
    const [one, two] = await deployment(modeEnv);
    const metadata = { blob: 'x'.repeat(900 * 1024) };
    const refusedSession = await reply(one.client.POST('/v1/sessions', { body: { provider: 'shell', metadata }, headers: B }));
    expect(refusedSession.status).toBe(413);
    expect(refusedSession.body.error).toMatchObject({ kind: 'payload_too_large', details: { field: 'metadata', quota: 'metadata_bytes', limit: 65_536 } });
    expect(refusedSession.body.error.message).toMatch(/^metadata: .*"quotas\.metadata_bytes".*ASM_TENANTS_FILE/);

    const s = await session(two, B);
    const refusedRun = await reply(two.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s } }, body: { prompt: 'echo', metadata }, headers: B }));
    expect(refusedRun.status).toBe(413);
    expect(refusedRun.body.error).toMatchObject({ kind: 'payload_too_large', details: { field: 'metadata', quota: 'metadata_bytes' } });
    expect((await reply(one.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: s } }, headers: B }))).body.runs).toEqual([]);

    const small = { ticket: 'T-1' };
    expect((await reply(one.client.POST('/v1/sessions', { body: { provider: 'shell', metadata: small }, headers: A }))).body.metadata).toEqual(small);
  });
});
