import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../../src/app.js';
import { loadConfig } from '../../../src/config.js';
import { reply, startServer, type TestServer } from '../../helpers/server.js';
import { tenant, tenantsFile } from '../../helpers/tenants.js';

/**
 * Tenant B against the lanes the service keeps for its own short commands (system, control, session,
 * query): B cannot queue a run there, as a session's queue or a run's, so A's interrupts and
 * approval decisions always find a control slot. Runs go on prompt, skill, and the custom lanes the
 * operator marks `runs: true`.
 */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const A = { authorization: `Bearer ${KEY_A}` };
const B = { authorization: `Bearer ${KEY_B}` };
const SERVICE_LANES = ['system', 'control', 'session', 'query'];

let server: TestServer;

function expectQueueRefused(res: { status: number; body: any }, lane: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(400);
  expect(res.body.error).toMatchObject({ kind: 'bad_request', details: { field: 'queue' } });
  expect(res.body.error.message).toContain(`lane "${lane}" does not carry runs`);
}

describe('hostile tenant: runs only on run lanes', () => {
  beforeAll(async () => {
    const shell = { providers: ['shell'] };
    server = await startServer({
      ASM_TENANTS_FILE: tenantsFile([tenant('tenant-a', KEY_A, shell), tenant('tenant-b', KEY_B, shell)]),
      ASM_LANES: JSON.stringify([
        { id: 'bulk', priority: 9, maxConcurrency: 1, runs: true },
        { id: 'maintenance', priority: 0, maxConcurrency: 1 },
      ]),
    });
  });
  afterAll(() => server?.close());

  it.each(SERVICE_LANES)('B cannot make %s the queue of a session', async (lane) => {
    expectQueueRefused(await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', queue: lane }, headers: B })), lane);
  });

  it('B cannot put a run of its own session on a service lane, nor on a custom lane the operator did not mark', async () => {
    const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B }));
    for (const lane of [...SERVICE_LANES, 'maintenance']) {
      expectQueueRefused(await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'sleep 15', queue: lane }, headers: B })), lane);
    }
    expectQueueRefused(await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', queue: 'maintenance' }, headers: B })), 'maintenance');
    expect((await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, headers: B }))).body.runs).toEqual([]);
    const control = (await reply(server.client.GET('/v1/queues', { headers: B }))).body.queues.find((q: any) => q.name === 'control');
    expect(control).toMatchObject({ active: 0, pending: 0 });
  });

  it("A's interrupt is served at once while B's runs fill the skill lane", async () => {
    const busy = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', max_concurrent_runs: 5 }, headers: B }));
    const hogs = await Promise.all([1, 2, 3].map(() => reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: busy.body.id } }, body: { prompt: 'sleep 15' }, headers: B }))));
    const sessionA = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', queue: 'bulk' }, headers: A }));
    const runA = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionA.body.id } }, body: { prompt: 'echo started; sleep 15' }, headers: A }));
    // Interrupted once its command runs: a SIGINT that lands while the sandbox is still starting the
    // shell is lost to the start-up window (the stop escalation then takes the 5 s grace).
    await expect
      .poll(async () => (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: runA.body.id }, query: { after: 0 } }, headers: A }))).body.events.some((e: any) => e.kind === 'assistant_delta'), { timeout: 10_000 })
      .toBe(true);
    const started = Date.now();
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: runA.body.id } }, headers: A }))).status).toBe(202);
    expect((await server.app.sessions.waitForRun(runA.body.id, 10_000)).state).toBe('interrupted');
    expect(Date.now() - started).toBeLessThan(5_000);
    for (const hog of hogs) await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: hog.body.id } }, headers: B }));
  });

  it('runs go on prompt, skill and a lane marked runs: true', async () => {
    for (const queue of ['skill', 'prompt', 'bulk']) {
      const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', queue }, headers: B }));
      expect(session.status, JSON.stringify(session.body)).toBe(201);
      const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'echo ok', wait: true }, headers: B }));
      expect(run.body).toMatchObject({ state: 'completed', queue });
    }
  });
});

describe('the operator cannot open a service lane to runs', () => {
  it.each(['control', 'query'])('ASM_LANES with runs: true on %s stops start-up', async (lane) => {
    const workspace = mkdtempSync(join(tmpdir(), 'asm-lanes-'));
    try {
      const config = loadConfig({ ASM_WORKSPACE_ROOT: workspace, ASM_LANES: JSON.stringify([{ id: lane, runs: true }]) });
      await expect(createApp(config, pino({ level: 'silent' }))).rejects.toThrow(`lane "${lane}": runs cannot be set on a default lane`);
    } finally {
      rmSync(workspace, { recursive: true, force: true });
    }
  });
});
