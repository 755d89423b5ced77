import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reply, startServer, type TestServer } from '../../helpers/server.js';

/** One run cannot make the service hold unbounded output: past ASM_MAX_RUN_OUTPUT_BYTES it is stopped, keeping what it printed so far. */

const LIMIT = 64 * 1024;

describe('run output limit', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({ ASM_MAX_RUN_OUTPUT_BYTES: String(LIMIT) });
  });
  afterAll(() => server.close());

  it('stops a run that floods its output with quota_exceeded; the result and the kept events stay bounded', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    // About 50 MB if nothing stopped it.
    const started = Date.now();
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'yes 0123456789abcdef | head -c 50000000', wait: true } }))).body;
    expect(run.state).toBe('failed');
    expect(run.result.error).toMatchObject({ kind: 'quota_exceeded', details: { quota: 'run_output_bytes', limit: LIMIT } });
    expect(run.result.error.message).toContain('ASM_MAX_RUN_OUTPUT_BYTES');
    expect(Date.now() - started).toBeLessThan(10_000);

    const body = (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } }, parseAs: 'text' }))).body as string;
    expect(body.length).toBeLessThan(2 * LIMIT);
    expect(run.result.text.length).toBeGreaterThan(0);

    const events: Array<{ seq: number; kind: string; payload: unknown }> = [];
    for (let after = 0; ; ) {
      const page = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id }, query: { after, limit: 1000 } } }))).body.events as typeof events;
      if (page.length === 0) break;
      events.push(...page);
      after = page.at(-1)!.seq;
    }
    const terminal = events.filter((e) => ['result', 'error', 'run_completed'].includes(e.kind));
    expect(terminal).toHaveLength(1);
    expect(terminal[0].payload).toMatchObject({ kind: 'quota_exceeded' });
    const kept = events.reduce((sum, e) => sum + JSON.stringify(e.payload).length, 0);
    expect(kept).toBeLessThan(2 * LIMIT);
  });

  it('leaves a run under the limit alone', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'head -c 30000 /dev/zero | tr "\\0" a; echo', wait: true } }))).body;
    expect(run.state).toBe('completed');
    expect(run.result.text.length).toBe(30_001);
  });
});
