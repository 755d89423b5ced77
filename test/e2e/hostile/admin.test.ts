import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reply, SERVER_MODES, startServer, type TestServer } from '../../helpers/server.js';
import { tenant, tenantsFile } from '../../helpers/tenants.js';
import { waitFor } from '../../helpers/wait.js';

/**
 * Tenant B against the operations that act on the whole service: pausing lanes, the dead letters and
 * queue events of other tenants, node details and metrics. B gets 403 or nothing; only an admin
 * (OPS) gets them.
 */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const KEY_OPS = 'key-ops-00112233445566';
const A = { authorization: `Bearer ${KEY_A}` };
const B = { authorization: `Bearer ${KEY_B}` };
const OPS = { authorization: `Bearer ${KEY_OPS}` };

let server: TestServer;

function expectForbidden(res: { status: number; body: any }) {
  expect(res.status, JSON.stringify(res.body)).toBe(403);
  expect(res.body.error).toMatchObject({ kind: 'forbidden', message: expect.stringContaining('admins') });
}

/** A finished shell run of the caller, in a new session. */
async function run(headers: Record<string, string>, prompt: string): Promise<any> {
  const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers }));
  expect(session.status).toBe(201);
  return (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt, wait: true }, headers }))).body;
}

const letters = async (headers: Record<string, string>) => (await reply(server.client.GET('/v1/dlq', { headers }))).body.dead_letters.map((l: any) => l.id);

describe.each(SERVER_MODES)('hostile tenant: global operations are for admins, %s', (_mode, modeEnv) => {
  beforeAll(async () => {
    const shell = { providers: ['shell'] };
    server = await startServer({
      ...modeEnv(),
      ASM_TENANTS_FILE: tenantsFile([tenant('tenant-a', KEY_A, shell), tenant('tenant-b', KEY_B, shell), tenant('ops', KEY_OPS, { role: 'admin', ...shell })]),
    });
  });
  afterAll(() => server?.close());

  it("B cannot pause or resume any lane, so A's runs keep flowing", async () => {
    for (const lane of ['control', 'session', 'skill', 'prompt']) {
      expectForbidden(await reply(server.client.POST('/v1/queues/{lane}/pause', { params: { path: { lane } }, headers: B })));
      expectForbidden(await reply(server.client.POST('/v1/queues/{lane}/resume', { params: { path: { lane } }, headers: B })));
    }
    expectForbidden(await reply(server.client.POST('/v1/queues/{lane}/pause', { params: { path: { lane: 'no-such-lane' } }, headers: B })));
    const queues = (await reply(server.client.GET('/v1/queues', { headers: B }))).body.queues;
    expect(queues.filter((q: any) => q.paused)).toEqual([]);
    expect((await run(A, 'echo a flows')).state).toBe('completed');

    // The admin may.
    const paused = await reply(server.client.POST('/v1/queues/{lane}/pause', { params: { path: { lane: 'skill' } }, headers: OPS }));
    expect(paused.body.queues[0]).toMatchObject({ name: 'skill', paused: true });
    expect((await reply(server.client.POST('/v1/queues/{lane}/resume', { params: { path: { lane: 'skill' } }, headers: OPS }))).body.queues[0]).toMatchObject({ name: 'skill', paused: false });
  });

  it('B cannot read /metrics or the node details of /v1/nodes', async () => {
    for (const path of ['/metrics', '/v1/nodes']) {
      // Raw fetch: one loop over two routes, which the client's per-path types cannot share.
      const refused = await server.request('GET', path, undefined, B);
      expectForbidden(refused);
      expect(JSON.stringify(refused.body)).not.toMatch(/asm_lane|test-node/);
    }
    expect((await reply(server.client.GET('/metrics', { headers: OPS, parseAs: 'text' }))).body).toMatch(/^asm_up 1$/m);
    expect((await reply(server.client.GET('/v1/nodes', { headers: OPS }))).body.nodes).toEqual([expect.objectContaining({ name: 'test-node' })]);
  });

  it("B sees none of A's dead letters and can neither retry nor delete them; the admin sees every tenant's", async () => {
    const failedA = await run(A, 'echo private to a >&2; exit 7');
    expect(failedA.state).toBe('failed');
    await waitFor(async () => (await letters(A)).includes(failedA.id), "A's dead letter");

    expect(await letters(B)).toEqual([]);
    expect((await reply(server.client.POST('/v1/dlq/{id}/retry', { params: { path: { id: failedA.id } }, headers: B }))).status).toBe(404);
    expect((await reply(server.client.DELETE('/v1/dlq/{id}', { params: { path: { id: failedA.id } }, headers: B }))).status).toBe(404);
    expect(await letters(A)).toEqual([failedA.id]);

    const failedB = await run(B, 'exit 8');
    await waitFor(async () => (await letters(B)).includes(failedB.id), "B's dead letter");
    expect(await letters(B)).toEqual([failedB.id]);
    expect(await letters(A)).toEqual([failedA.id]);
    expect((await letters(OPS)).sort()).toEqual([failedA.id, failedB.id].sort());

    // An admin's retry is a new run of A's session, as A's.
    const retried = await reply(server.client.POST('/v1/dlq/{id}/retry', { params: { path: { id: failedA.id } }, headers: OPS }));
    expect(retried.status).toBe(202);
    const retry = await server.app.sessions.waitForRun(retried.body.run_id, 10_000);
    expect(retry).toMatchObject({ tenant: 'tenant-a', session_id: failedA.session_id });
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: retry.id } }, headers: A }))).status).toBe(200);
    for (const id of await letters(OPS)) expect((await reply(server.client.DELETE('/v1/dlq/{id}', { params: { path: { id } }, headers: OPS }))).status).toBe(204);
  });

  it("B's queue_events stream carries none of A's commands or their errors", async () => {
    const wsA = server.stream('queue_events=true', A);
    const wsB = server.stream('queue_events=true', B);
    const wsOps = server.stream('queue_events=true', OPS);
    await Promise.all([wsA, wsB, wsOps].map((ws) => ws.next((f) => f.type === 'subscribed')));
    const queueEvent = (key: string, runId: string) => (f: any) => f.type === 'queue_event' && f.event.key === key && f.event.payload.command_id === runId;

    const runA = await run(A, 'echo stderr secret of a >&2; exit 3');
    await wsA.next(queueEvent('queue.command.failed', runA.id));
    await wsOps.next(queueEvent('queue.command.failed', runA.id));
    // B's events are filtered in the engine's order, so once B has its own later run's last event, A's are decided.
    const runB = await run(B, 'echo b');
    await wsB.next(queueEvent('queue.command.completed', runB.id));

    const seenByB = wsB.frames.filter((f) => f.type === 'queue_event');
    expect(seenByB.map((f) => f.event.key)).toEqual(['queue.command.submitted', 'queue.command.started', 'queue.command.completed']);
    expect(new Set(seenByB.map((f) => f.event.payload.command_id))).toEqual(new Set([runB.id]));
    expect(JSON.stringify(wsB.frames)).not.toMatch(new RegExp(`${runA.id}|secret of a|${runA.session_id}`));
    // The admin sees the lanes as they are: both tenants' commands, and the service's own (closing a session).
    await wsOps.next(queueEvent('queue.command.completed', runB.id));
    expect((await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: runA.session_id } }, headers: A }))).status).toBe(200);
    await wsOps.next((f) => f.type === 'queue_event' && f.event.key === 'queue.command.completed' && f.event.payload?.command_type === 'session.close');
  });
});
