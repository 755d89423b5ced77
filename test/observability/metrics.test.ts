import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startServer, TERMINAL, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { parseExposition, sample, type Samples } from './exposition.js';

/**
 * GET /metrics after real work through the service: a run whose approval is allowed over REST, a
 * run interrupted in the middle of a tool, one allowed by timeout, a WebSocket and an SSE stream.
 * Each family of README "Observability" is found with the counts this work must have produced.
 */

let server: TestServer;

const scrape = async (): Promise<Samples> => {
  const res = await server.request('GET', '/metrics');
  expect(res.status).toBe(200);
  return parseExposition(res.body);
};

async function claudeSession(extra: Record<string, unknown> = {}) {
  const res = await server.request('POST', '/v1/sessions', { provider: 'claude', ...extra });
  expect(res.status).toBe(201);
  return res.body;
}

describe('Prometheus metrics (prom-client)', () => {
  beforeEach(async () => {
    server = await startServer();
  });
  afterEach(() => server.close());

  it('counts runs, approvals, tokens, cost, events, streams and HTTP requests', async () => {
    const s = await claudeSession();
    const ws = server.stream(`session_id=${s.id}&after=0`);
    await ws.next((f) => f.type === 'subscribed');

    // A run with an approval the user allows.
    const approved = (await server.request('POST', `/v1/sessions/${s.id}/runs`, { prompt: 'create a file [fixture:c2-approve]' })).body;
    const requested = await ws.event('approval_requested');
    expect((await server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' })).status).toBe(200);
    await ws.event('result', (e) => e.run_id === approved.id);

    // A run interrupted in the middle of a tool, with an SSE reader following it.
    const interrupted = (await server.request('POST', `/v1/sessions/${s.id}/runs`, { prompt: 'Run the slow job [fixture:c3-interrupt]' })).body;
    const sse = await fetch(`${server.url}/v1/runs/${interrupted.id}/events`, { headers: { accept: 'text/event-stream' } });
    expect(sse.status).toBe(200);
    await waitFor(async () => sample(await scrape(), 'asm_event_stream_clients', { transport: 'sse' }) === 1, 'the SSE stream to be counted');
    await ws.event('tool_use', (e) => e.run_id === interrupted.id);
    expect(sample(await scrape(), 'asm_runs_active')).toBe(1);
    expect((await server.request('POST', `/v1/runs/${interrupted.id}/interrupt`)).status).toBe(202);
    await ws.next((f) => f.type === 'event' && f.event.run_id === interrupted.id && TERMINAL.has(f.event.kind));
    await sse.text(); // the SSE stream ends after the terminal event

    // A session whose approval nobody answers: denied by the timeout.
    const timed = await claudeSession({ approval_timeout_ms: 200 });
    const timedRun = (await server.request('POST', `/v1/sessions/${timed.id}/runs`, { prompt: 'create a file [fixture:c2-deny]', wait: true })).body;
    expect(timedRun.state).toBe('completed');

    const m = await waitFor(async () => {
      const samples = await scrape();
      return sample(samples, 'asm_approval_wait_seconds_count', { decision: 'deny', by: 'timeout' }) === 1 &&
        sample(samples, 'asm_event_stream_clients', { transport: 'sse' }) === 0 &&
        // A run stays active until its CLI has exited, a moment after its terminal event.
        sample(samples, 'asm_runs_active') === 0 &&
        samples;
    }, 'the approval waits, the SSE stream end and the runs to leave the process');

    const claude = { provider: 'claude', backend: 'core', queue: 'prompt' };
    expect(sample(m, 'asm_runs_started_total', claude)).toBe(3);
    expect(sample(m, 'asm_runs_finished_total', { ...claude, state: 'completed', error_kind: 'none' })).toBe(2);
    expect(sample(m, 'asm_runs_finished_total', { ...claude, state: 'interrupted', error_kind: 'user_cancelled' })).toBe(1);
    expect(sample(m, 'asm_run_duration_seconds_count', { provider: 'claude', backend: 'core', state: 'completed' })).toBe(2);
    expect(sample(m, 'asm_run_duration_seconds_count', { provider: 'claude', backend: 'core', state: 'interrupted' })).toBe(1);
    expect(sample(m, 'asm_run_queue_wait_seconds_count', { provider: 'claude', queue: 'prompt' })).toBe(3);

    expect(sample(m, 'asm_approvals_requested_total', { provider: 'claude' })).toBe(2);
    expect(sample(m, 'asm_approvals_decided_total', { provider: 'claude', decision: 'allow', by: 'user' })).toBe(1);
    expect(sample(m, 'asm_approvals_decided_total', { provider: 'claude', decision: 'deny', by: 'timeout' })).toBe(1);
    expect(sample(m, 'asm_approval_wait_seconds_count', { decision: 'allow', by: 'user' })).toBe(1);
    // The timeout's wait is at least the session's approval_timeout_ms.
    expect(sample(m, 'asm_approval_wait_seconds_bucket', { decision: 'deny', by: 'timeout', le: '0.1' })).toBe(0);

    // Tokens and cost are the sum of the runs' results.
    const results = await Promise.all([approved.id, interrupted.id, timedRun.id].map(async (id) => (await server.request('GET', `/v1/runs/${id}`)).body.result));
    const sum = (pick: (r: any) => number) => results.reduce((total, r) => total + (pick(r) ?? 0), 0);
    expect(sample(m, 'asm_tokens_total', { provider: 'claude', type: 'input' })).toBe(sum((r) => r.usage?.input_tokens));
    expect(sample(m, 'asm_tokens_total', { provider: 'claude', type: 'output' })).toBe(sum((r) => r.usage?.output_tokens));
    expect(sum((r) => r.usage?.output_tokens)).toBeGreaterThan(0);
    expect(sample(m, 'asm_cost_usd_total', { provider: 'claude' })).toBeCloseTo(sum((r) => r.cost_usd), 9);

    // Every event of both sessions was appended by this process.
    const events = [
      ...(await server.request('GET', `/v1/runs/${approved.id}/events?limit=1000`)).body.events,
      ...(await server.request('GET', `/v1/runs/${interrupted.id}/events?limit=1000`)).body.events,
      ...(await server.request('GET', `/v1/runs/${timedRun.id}/events?limit=1000`)).body.events,
    ];
    const appended = [...m.entries()].filter(([key]) => key.startsWith('asm_events_appended_total{')).reduce((total, [, value]) => total + value, 0);
    expect(appended).toBe(events.length);
    expect(sample(m, 'asm_events_appended_total', { kind: 'approval_resolved' })).toBe(2);
    expect(sample(m, 'asm_events_appended_total', { kind: 'run_queued' })).toBe(3);

    expect(sample(m, 'asm_event_stream_clients', { transport: 'websocket' })).toBe(1);
    expect(sample(m, 'asm_event_stream_slow_consumer_closes_total', { transport: 'websocket' })).toBe(0);

    // HTTP requests by route pattern, never by URL.
    expect(sample(m, 'asm_http_request_duration_seconds_count', { method: 'POST', route: '/v1/sessions/:id/runs', status_code: '202' })).toBe(2);
    expect(sample(m, 'asm_http_request_duration_seconds_count', { method: 'POST', route: '/v1/approvals/:id', status_code: '200' })).toBe(1);
    expect(sample(m, 'asm_http_request_duration_seconds_count', { method: 'POST', route: '/v1/runs/:id/interrupt', status_code: '202' })).toBe(1);
    expect([...m.keys()].some((key) => key.includes(approved.id) || key.includes(s.id))).toBe(false);

    // The lane families keep their names; the process's own come from prom-client's defaults.
    expect(sample(m, 'asm_lane_commands_completed_total', { lane: 'control' })).toBeGreaterThanOrEqual(2);
    expect(sample(m, 'asm_lane_pending', { lane: 'prompt' })).toBe(0);
    expect(sample(m, 'asm_up')).toBe(1);
    expect(sample(m, 'asm_sessions')).toBe(2);
    expect(sample(m, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(sample(m, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('counts a refused route under its pattern and an unknown URL as unmatched', async () => {
    expect((await server.request('GET', '/v1/runs/run_nope')).status).toBe(404);
    expect((await server.request('GET', '/no/such/path-123')).status).toBe(404);
    const m = await scrape();
    expect(sample(m, 'asm_http_request_duration_seconds_count', { method: 'GET', route: '/v1/runs/:id', status_code: '404' })).toBe(1);
    expect(sample(m, 'asm_http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status_code: '404' })).toBe(1);
  });
});

describe('ASM_METRICS=off', () => {
  it('serves no /metrics and counts nothing', async () => {
    server = await startServer({ ASM_METRICS: 'off' });
    try {
      const res = await server.request('GET', '/metrics');
      expect(res.status).toBe(404);
      expect(res.body.error.kind).toBe('not_found');
    } finally {
      await server.close();
    }
  });
});
