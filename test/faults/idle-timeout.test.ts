import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type TestServer } from '../helpers/server.js';

/**
 * idle_timeout_ms (README "Events and results"): a CLI silent for that long is stopped with
 * idle_timeout, but not while it waits for an approval (the approval's own timeout covers that), and
 * output keeps it alive. The silent and closed-stdout CLIs are in misbehaving-clis.test.ts.
 */
describe('the idle-stream timeout', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({ ASM_IDLE_TIMEOUT_MS: '400' });
  });
  afterAll(async () => {
    await server.close();
  });

  it('is the default of a session (ASM_IDLE_TIMEOUT_MS), and the session option is validated', async () => {
    const s = await server.request('POST', '/v1/sessions', { provider: 'shell' });
    expect(s.body.idle_timeout_ms).toBe(400);
    const bad = await server.request('POST', '/v1/sessions', { provider: 'shell', idle_timeout_ms: -1 });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.field).toContain('idle_timeout_ms');
  });

  it('does not stop a CLI that waits for an approval longer than the idle timeout', async () => {
    const s = await server.request('POST', '/v1/sessions', { provider: 'claude' });
    const ws = server.stream(`session_id=${s.body.id}&after=0`);
    const run = (await server.request('POST', `/v1/sessions/${s.body.id}/runs`, { prompt: 'create a file [fixture:c2-approve]' })).body;
    const requested = await ws.event('approval_requested');
    // Three idle timeouts of silence while the approval waits: the run must still be running.
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    expect((await server.request('GET', `/v1/runs/${run.id}`)).body.state).toBe('running');
    expect((await server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' })).status).toBe(200);
    expect((await ws.event('result')).run_id).toBe(run.id);
  });

  it('does not stop a CLI that keeps printing, however long it runs', async () => {
    const s = await server.request('POST', '/v1/sessions', { provider: 'shell' });
    const done = await server.request('POST', `/v1/sessions/${s.body.id}/runs`, { prompt: 'for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done', wait: true });
    expect(done.body.state).toBe('completed');
    expect(done.body.result.text).toBe('1\n2\n3\n4\n5\n6\n');
  });

  it('0 turns it off', async () => {
    const s = await server.request('POST', '/v1/sessions', { provider: 'shell', idle_timeout_ms: 0 });
    const done = await server.request('POST', `/v1/sessions/${s.body.id}/runs`, { prompt: 'sleep 1; echo late', wait: true });
    expect(done.body.state).toBe('completed');
  });
});
