import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_LANES } from '../../src/lanes/index.js';
import { reply, SERVER_MODES, startServer, type TestServer } from '../helpers/server.js';

let server: TestServer;

async function shellSession(): Promise<string> {
  const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }));
  expect(res.status).toBe(201);
  return res.body.id;
}

describe.each(SERVER_MODES)('queue lanes, dead letters and metrics over HTTP, %s', (_mode, modeEnv) => {
  beforeEach(async () => {
    server = await startServer(modeEnv());
  });
  afterEach(async () => {
    await server.close();
  });

  it('lists the default lanes and holds runs while a lane is paused', async () => {
    const lanes = (await reply(server.client.GET('/v1/queues'))).body.queues;
    // The table's values are pinned once, in test/lanes/memory-engine.test.ts.
    expect(lanes.map((q: any) => [q.name, q.priority, q.max_concurrency])).toEqual(DEFAULT_LANES.map((l) => [l.id, l.priority, l.maxConcurrency]));

    const paused = await reply(server.client.POST('/v1/queues/{lane}/pause', { params: { path: { lane: 'skill' } } }));
    expect(paused.body.queues[0]).toMatchObject({ name: 'skill', paused: true });
    const sessionId = await shellSession();
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt: 'echo held' } }))).body;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('queued');
    const skill = (await reply(server.client.GET('/v1/queues'))).body.queues.find((q: any) => q.name === 'skill');
    expect(skill).toMatchObject({ pending: 1, paused: true });

    await reply(server.client.POST('/v1/queues/{lane}/resume', { params: { path: { lane: 'skill' } } }));
    const done = await server.app.sessions.waitForRun(run.id, 10_000);
    expect(done.state).toBe('completed');
    // The lane counts the command once its handler returns, which may be a moment after the run's terminal event.
    const skillLane = async () => (await reply(server.client.GET('/v1/queues'))).body.queues.find((q: any) => q.name === 'skill');
    await expect.poll(async () => (await skillLane()).completed, { timeout: 5_000 }).toBeGreaterThanOrEqual(1);
    expect(await skillLane()).toMatchObject({ pending: 0, paused: false });
    expect((await reply(server.client.POST('/v1/queues/{lane}/pause', { params: { path: { lane: 'nope' } } }))).status).toBe(404);
  });

  it('dead-letters a failed run; a retry submits its prompt again as a new run', async () => {
    const sessionId = await shellSession();
    const failed = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt: 'exit 7', wait: true } }))).body;
    expect(failed.state).toBe('failed');
    // The command fails into the DLQ once its handler returns, which may be a moment after the run's terminal event.
    const deadLetters = async () => (await reply(server.client.GET('/v1/dlq'))).body.dead_letters;
    await expect.poll(deadLetters, { timeout: 5_000 }).toHaveLength(1);
    const dlq = await deadLetters();
    expect(dlq[0]).toMatchObject({ id: failed.id, type: 'run.execute', queue: 'skill', payload: { run_id: failed.id }, attempts: 1 });

    const retry = await reply(server.client.POST('/v1/dlq/{id}/retry', { params: { path: { id: failed.id } } }));
    expect(retry.status).toBe(202);
    expect(retry.body.run_id).not.toBe(failed.id);
    const again = await server.app.sessions.waitForRun(retry.body.run_id, 10_000);
    expect(again.prompt).toBe('exit 7');
    expect(again.metadata).toMatchObject({ retry_of: failed.id });
    expect(again.session_id).toBe(sessionId);
    // The retry failed too, so it is the one dead letter now.
    await expect.poll(async () => (await deadLetters()).map((l: any) => l.id), { timeout: 5_000 }).toEqual([retry.body.run_id]);
    expect((await reply(server.client.DELETE('/v1/dlq/{id}', { params: { path: { id: retry.body.run_id } } }))).status).toBe(204);
    expect((await reply(server.client.GET('/v1/dlq'))).body.dead_letters).toEqual([]);
    expect((await reply(server.client.DELETE('/v1/dlq/{id}', { params: { path: { id: retry.body.run_id } } }))).status).toBe(404);
  });

  it('exposes lane and session metrics in Prometheus text', async () => {
    const sessionId = await shellSession();
    await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt: 'echo m', wait: true } }));
    // The lane counts the command once its handler returns, a moment after the run's terminal event.
    await expect
      .poll(async () => (await reply(server.client.GET('/metrics', { parseAs: 'text' }))).body, { timeout: 5_000 })
      .toMatch(/^asm_lane_commands_completed_total\{lane="skill"\} [1-9]/m);
    const metrics = await reply(server.client.GET('/metrics', { parseAs: 'text' }));
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    expect(metrics.body).toMatch(/^asm_lane_pending\{lane="prompt"\} 0$/m);
    expect(metrics.body).toMatch(/^asm_sessions 1$/m);
    expect(metrics.body).toMatch(/^asm_up 1$/m);
  });

  it('reports this process as the node, and readiness drops when it shuts down', async () => {
    const nodes = (await reply(server.client.GET('/v1/nodes'))).body.nodes;
    expect(nodes).toHaveLength(1);
    expect(nodes[0]).toMatchObject({ name: 'test-node', role: 'api', id: expect.stringMatching(/^test-node-/), state: 'ready', providers: expect.arrayContaining(['shell', 'claude']) });
    expect((await reply(server.client.GET('/readyz'))).status).toBe(200);
    await server.app.close();
    expect((await reply(server.client.GET('/readyz'))).status).toBe(503);
    const refused = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }));
    expect(refused.status).toBe(503);
    expect(refused.body.error.kind).toBe('shutting_down');
  });
});

describe('session capacity', () => {
  it('makes room by forgetting the longest-closed session, and refuses only when all are open', async () => {
    const capped = await startServer({ ASM_MAX_SESSIONS: '2' });
    try {
      const create = () => reply(capped.client.POST('/v1/sessions', { body: { provider: 'shell' } }));
      const a = (await create()).body;
      const b = (await create()).body;
      const refused = await create();
      expect(refused.status).toBe(429);
      expect(refused.body.error.kind).toBe('at_capacity');

      const run = (await reply(capped.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: a.id } }, body: { prompt: 'echo a', wait: true } }))).body;
      await reply(capped.client.DELETE('/v1/sessions/{id}', { params: { path: { id: a.id } } }));
      const c = await create();
      expect(c.status).toBe(201);
      expect((await reply(capped.client.GET('/v1/sessions/{id}', { params: { path: { id: a.id } } }))).status).toBe(404);
      expect((await reply(capped.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).status).toBe(404);
      expect((await reply(capped.client.GET('/v1/sessions/{id}', { params: { path: { id: b.id } } }))).status).toBe(200);
      expect((await reply(capped.client.GET('/v1/sessions'))).body.sessions.map((s: any) => s.id).sort()).toEqual([b.id, c.body.id].sort());
    } finally {
      await capped.close();
    }
  });
});

describe('ASM_LANES', () => {
  it('overrides a default lane and adds a custom one that sessions can use', async () => {
    const custom = await startServer({
      ASM_LANES: JSON.stringify([
        { id: 'prompt', maxConcurrency: 8 },
        { id: 'bulk', priority: 9, minConcurrency: 0, maxConcurrency: 1, runs: true },
      ]),
    });
    try {
      const queues = (await reply(custom.client.GET('/v1/queues'))).body.queues;
      expect(queues.find((q: any) => q.name === 'prompt')).toMatchObject({ priority: 5, max_concurrency: 8 });
      expect(queues.find((q: any) => q.name === 'bulk')).toMatchObject({ priority: 9, min_concurrency: 0, max_concurrency: 1 });
      const session = (await reply(custom.client.POST('/v1/sessions', { body: { provider: 'shell', queue: 'bulk' } }))).body;
      const run = (await reply(custom.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo bulk', wait: true } }))).body;
      expect(run).toMatchObject({ state: 'completed', queue: 'bulk' });
      expect(run.result.metadata.queue).toBe('bulk');
    } finally {
      await custom.close();
    }
  });
});
