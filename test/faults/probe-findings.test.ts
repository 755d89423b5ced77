import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SERVER_MODES, startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { sleepers, sleepMarker } from './processes.js';

/** What the fault probe of issue 13 found about interrupts and session state, each with its fix's test. */

describe.each(SERVER_MODES)('probe findings, %s', (_mode, modeEnv) => {
  let server: TestServer;
  beforeEach(async () => {
    // The default interrupt grace: a lost interrupt shows as a run that takes the whole 5 s to end.
    server = await startServer({ ASM_INTERRUPT_GRACE_MS: '5000', ...modeEnv() });
  });
  afterEach(async () => {
    await server.close();
  });

  async function shellSession(): Promise<string> {
    const s = await server.request('POST', '/v1/sessions', { provider: 'shell' });
    expect(s.status).toBe(201);
    return s.body.id;
  }

  it('finding 7: an interrupt in the first millisecond of a run reaches the CLI at once', async () => {
    const sessionId = await shellSession();
    const ws = server.stream(`session_id=${sessionId}&after=0`);
    for (let round = 0; round < 5; round++) {
      const marker = sleepMarker();
      const run = (await server.request('POST', `/v1/sessions/${sessionId}/runs`, { prompt: `sleep ${marker}` })).body;
      await ws.event('run_started', (e) => e.run_id === run.id);
      const interruptedAt = Date.now();
      expect((await server.request('POST', `/v1/runs/${run.id}/interrupt`)).status).toBe(202);
      const ended = await ws.event('error', (e) => e.run_id === run.id);
      expect(ended.payload.kind).toBe('user_cancelled');
      // Well under the 5 s grace that a lost SIGINT would wait for.
      expect(Date.now() - interruptedAt).toBeLessThan(2_500);
      await waitFor(() => sleepers(marker).length === 0, 'the sleeper to be gone');
    }
  });

  it('finding 7: closing a session with queued runs starts none of them and ends at once', async () => {
    const s = await server.request('POST', '/v1/sessions', { provider: 'shell', max_concurrent_runs: 1 });
    const runs: string[] = [];
    for (let i = 0; i < 3; i++) runs.push((await server.request('POST', `/v1/sessions/${s.body.id}/runs`, { prompt: 'sleep 30' })).body.id);
    await waitFor(async () => (await server.request('GET', `/v1/runs/${runs[0]}`)).body.state === 'running', 'the first run to start');
    const closingAt = Date.now();
    const closed = await server.request('DELETE', `/v1/sessions/${s.body.id}`);
    expect(closed.status).toBe(200);
    expect(Date.now() - closingAt).toBeLessThan(2_500);
    for (const id of runs.slice(1)) {
      const run = (await server.request('GET', `/v1/runs/${id}`)).body;
      expect(run).toMatchObject({ state: 'interrupted', started_at: null });
    }
  });

  it('finding 5: closing 20 sessions at once while their runs start ends every run, and each close is prompt', async () => {
    for (let round = 0; round < 4; round++) {
      const marker = sleepMarker();
      const pairs = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const sessionId = await shellSession();
          const run = await server.request('POST', `/v1/sessions/${sessionId}/runs`, { prompt: `sleep ${marker}` });
          return { sessionId, runId: run.body.id as string };
        }),
      );
      // Staggered over 0.4 s, so closes meet runs queued, starting and running.
      await Promise.all(
        pairs.map(async ({ sessionId, runId }, k) => {
          await new Promise((resolve) => setTimeout(resolve, (k * 37 + round * 53) % 400));
          const closingAt = Date.now();
          const closed = await server.request('DELETE', `/v1/sessions/${sessionId}`);
          expect(closed.body.state).toBe('closed');
          // Well under the 5 s grace that a lost interrupt would wait for.
          expect(Date.now() - closingAt).toBeLessThan(3_000);
          expect((await server.request('GET', `/v1/runs/${runId}`)).body.state).toBe('interrupted');
        }),
      );
      await waitFor(() => sleepers(marker).length === 0, 'no sleeper left');
    }
  });

  it('finding 8: an open session reports its last_seq', async () => {
    const sessionId = await shellSession();
    const done = await server.request('POST', `/v1/sessions/${sessionId}/runs`, { prompt: 'echo one; echo two', wait: true });
    expect(done.body.state).toBe('completed');
    const events = (await server.request('GET', `/v1/runs/${done.body.id}/events?after=0`)).body.events;
    const session = (await server.request('GET', `/v1/sessions/${sessionId}`)).body;
    expect(session.state).toBe('open');
    expect(session.last_seq).toBe(events.at(-1).seq);
    expect(session.last_seq).toBeGreaterThan(0);
  });
});

describe('finding 8: the WebSocket frame limit', () => {
  it('closes a socket that sends a frame over 64 KiB with 1009 (README), and keeps serving', async () => {
    const server = await startServer();
    try {
      const ws = server.stream('');
      await ws.opened;
      ws.socket.send(JSON.stringify({ type: 'subscribe', pad: 'x'.repeat(100 * 1024) }));
      expect((await ws.closed).code).toBe(1009);
      expect((await server.request('GET', '/healthz')).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});
