import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SERVER_MODES, startServer, type TestServer } from '../helpers/server.js';

/**
 * Found by the fuzzer (issue 13): pausing a lane that requests wait on (`session` for closes,
 * `control` for interrupts and decisions) held those requests without a bound, until an
 * operator resumed it. (Creates no longer go through a lane.) Now a command that has not started within ASM_COMMAND_WAIT_MS is withdrawn and
 * its request answered 503 not_ready naming the lane: bounded, and nothing was done.
 */

const WAIT_MS = 300;
/** The bound a refused request must answer within: the wait, plus scheduling slack on a loaded 2-core machine. */
const ANSWERED_WITHIN_MS = WAIT_MS + 4_000;

describe.each(SERVER_MODES)('requests on a paused lane, %s', (_mode, modeEnv) => {
  let server: TestServer;
  beforeEach(async () => {
    server = await startServer({ ASM_COMMAND_WAIT_MS: String(WAIT_MS), ...modeEnv() });
  });
  afterEach(async () => {
    await server.close();
  });

  async function timed(method: 'POST' | 'DELETE', path: string, body?: unknown) {
    const startedAt = Date.now();
    const res = await server.request(method, path, body);
    return { ...res, ms: Date.now() - startedAt };
  }

  it('answer 503 not_ready within ASM_COMMAND_WAIT_MS, did nothing, and work again once the lane resumes', async () => {
    const open = (await server.request('POST', '/v1/sessions', { provider: 'shell' })).body.id as string;
    await server.request('POST', '/v1/queues/skill/pause');
    const queued = (await server.request('POST', `/v1/sessions/${open}/runs`, { prompt: 'echo never' })).body.id as string;

    for (const lane of ['session', 'control']) expect((await server.request('POST', `/v1/queues/${lane}/pause`)).status).toBe(200);
    const close = await timed('DELETE', `/v1/sessions/${open}`);
    const interrupt = await timed('POST', `/v1/runs/${queued}/interrupt`);
    for (const [res, lane] of [
      [close, 'session'],
      [interrupt, 'control'],
    ] as const) {
      expect(res.status, JSON.stringify(res.body)).toBe(503);
      expect(res.body.error).toMatchObject({ kind: 'not_ready', retryable: true, details: { lane, waited_ms: WAIT_MS } });
      expect(res.ms).toBeGreaterThanOrEqual(WAIT_MS - 50);
      expect(res.ms).toBeLessThan(ANSWERED_WITHIN_MS);
    }

    for (const lane of ['session', 'control']) await server.request('POST', `/v1/queues/${lane}/resume`);
    // Nothing of the refused requests happened, and the lanes take new work.
    expect((await server.request('GET', `/v1/sessions/${open}`)).body.state).toBe('open');
    expect((await server.request('GET', `/v1/runs/${queued}`)).body.state).toBe('queued');
    expect((await server.request('POST', `/v1/runs/${queued}/interrupt`)).status).toBe(202);
    expect((await server.request('GET', `/v1/runs/${queued}`)).body.state).toBe('interrupted');
    expect((await server.request('POST', '/v1/sessions', { provider: 'shell' })).status).toBe(201);
    expect((await server.request('DELETE', `/v1/sessions/${open}`)).status).toBe(200);
  });
});
