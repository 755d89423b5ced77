import { afterEach, describe, expect, it } from 'vitest';
import { processGroupsRss } from '../../src/backends/agent-memory.js';
import type { RequestBody } from '../../src/client/index.js';
import { groupAlive, reply, startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Admission by memory (ASM_MAX_AGENT_MEMORY_MB): a run waits, still queued, while the node's agents
 * (their process groups' RSS, from /proc) use the limit or more; idle warm processes go first. A limit
 * of 1 MiB is below what any real process uses, so one running agent fills the node.
 */

let server: TestServer;

afterEach(async () => {
  await server.close();
});

async function session(body: RequestBody<'/v1/sessions', 'post'>): Promise<any> {
  const res = await reply(server.client.POST('/v1/sessions', { body }));
  expect(res.status).toBe(201);
  return res.body;
}

const runState = async (id: string) => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id } } }))).body.state;

async function runStarted(runId: string): Promise<any> {
  const events = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: runId }, query: { after: 0 } } }))).body.events;
  return events.find((e: any) => e.kind === 'run_started')?.payload;
}

describe('admission by memory', () => {
  it("a run waits queued while the node's agents use the limit, and starts once they are gone", async () => {
    server = await startServer({ ASM_MAX_AGENT_MEMORY_MB: '1', ASM_AGENT_MEMORY_POLL_MS: '20' });
    const busy = await session({ provider: 'shell' });
    const other = await session({ provider: 'shell' });
    const long = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: busy.id } }, body: { prompt: 'sleep 60' } }))).body;
    await waitFor(async () => (await runState(long.id)) === 'running', 'the long run to start');
    const pid = (await runStarted(long.id)).pid;
    expect(await processGroupsRss([pid])).toBeGreaterThan(1024 * 1024);

    const waiting = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: other.id } }, body: { prompt: 'echo admitted' } }))).body;
    await waitFor(() => server.app.memory.waiting === 1, 'the second run to wait for memory');
    expect(await runState(waiting.id)).toBe('queued');
    expect(await runStarted(waiting.id)).toBeUndefined();

    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: long.id } } }))).status).toBeLessThan(300);
    await waitFor(async () => (await runState(waiting.id)) === 'completed', 'the waiting run to complete', 15_000);
    expect(server.app.memory.waiting).toBe(0);
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: waiting.id } } }))).body.result.text).toContain('admitted');
  });

  it('an interrupt ends a run waiting for memory before it starts', async () => {
    server = await startServer({ ASM_MAX_AGENT_MEMORY_MB: '1', ASM_AGENT_MEMORY_POLL_MS: '20' });
    const busy = await session({ provider: 'shell' });
    const other = await session({ provider: 'shell' });
    const long = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: busy.id } }, body: { prompt: 'sleep 60' } }))).body;
    await waitFor(async () => (await runState(long.id)) === 'running', 'the long run to start');
    const waiting = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: other.id } }, body: { prompt: 'echo never' } }))).body;
    await waitFor(() => server.app.memory.waiting === 1, 'the second run to wait for memory');
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: waiting.id } } }))).status).toBeLessThan(300);
    await waitFor(async () => (await runState(waiting.id)) === 'interrupted', 'the waiting run to end interrupted');
    expect(await runStarted(waiting.id)).toBeUndefined();
    expect(await runState(long.id)).toBe('running');
  });

  it("an idle warm process is stopped to make room for another session's run", async () => {
    server = await startServer({ ASM_MAX_AGENT_MEMORY_MB: '1' });
    const warm = await session({ provider: 'claude', lane: 'core', warm: true });
    const kept = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: warm.id } }, body: { prompt: 'Say hello [fixture:c1-hello]', wait: true } }))).body;
    expect(kept.state).toBe('completed');
    const pid = (await runStarted(kept.id)).pid;
    expect(groupAlive(pid)).toBe(true);

    const shell = await session({ provider: 'shell' });
    const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: shell.id } }, body: { prompt: 'echo room', wait: true } }));
    expect(res.body.state).toBe('completed');
    expect(groupAlive(pid)).toBe(false);
  });

  it("a warm session's next run takes its kept process at once, whatever the limit: it adds no process", async () => {
    server = await startServer({ ASM_MAX_AGENT_MEMORY_MB: '1' });
    const warm = await session({ provider: 'claude', lane: 'core', warm: true });
    const first = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: warm.id } }, body: { prompt: 'Say hello [fixture:c1-hello]', wait: true } }))).body;
    const second = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: warm.id } }, body: { prompt: 'Again [fixture:c1-hello]', wait: true } }))).body;
    expect(second.state).toBe('completed');
    expect(await runStarted(second.id)).toMatchObject({ pid: (await runStarted(first.id)).pid, warm: true });
  });
});
