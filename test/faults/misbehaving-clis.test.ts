import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { projectResult } from '../../src/sessions/projection.js';
import { startServer, terminalEvents, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { processesWith, sleepMarker } from './processes.js';

/**
 * CLIs that misbehave, run through the whole service (HTTP, lanes, store, sandbox): each run ends with
 * one precise terminal error within a stated bound, and no process of the run survives it. Run in the
 * bubblewrap sandbox (the default) and without one (ASM_SANDBOX=none).
 */

const mb = (bytes: number) => Math.round(bytes / 1024 / 1024);
const MISBEHAVING_CLAUDE = new URL('../fixtures/bin/misbehaving-claude.mjs', import.meta.url).pathname;

/** Short graces, so each bound below is a few seconds: interrupt → SIGTERM → SIGKILL. */
const LIMITS = { ASM_INTERRUPT_GRACE_MS: '500', ASM_KILL_GRACE_MS: '500', ASM_EXIT_GRACE_MS: '500', ASM_CLAUDE_BIN: MISBEHAVING_CLAUDE };

describe.each([
  ['bwrap sandbox', {}],
  ['no sandbox', { ASM_SANDBOX: 'none' }],
])('misbehaving CLIs, %s', (_name, sandboxEnv) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({ ...LIMITS, ...sandboxEnv });
  });
  afterAll(async () => {
    await server.close();
  });

  async function run(provider: 'shell' | 'claude', prompt: string, session: Record<string, unknown> = {}) {
    const s = await server.request('POST', '/v1/sessions', { provider, ...session });
    expect(s.status).toBe(201);
    const started = Date.now();
    const submitted = await server.request('POST', `/v1/sessions/${s.body.id}/runs`, { prompt });
    expect(submitted.status).toBe(202);
    const runId = submitted.body.id;
    const done = await waitFor(
      async () => {
        const r = await server.request('GET', `/v1/runs/${runId}`);
        return ['completed', 'failed', 'interrupted'].includes(r.body.state) && r.body;
      },
      `run ${runId} to end`,
      60_000,
    );
    const events = await allEvents(runId);
    return { run: done, events, elapsedMs: Date.now() - started, sessionId: s.body.id };
  }

  /** Every stored event of the run, page by page. */
  async function allEvents(runId: string): Promise<any[]> {
    const events: any[] = [];
    for (let after = 0; ; ) {
      const page = (await server.request('GET', `/v1/runs/${runId}/events?after=${after}&limit=1000`)).body;
      events.push(...page.events);
      if (page.events.length === 0) return events;
      after = page.next_after;
    }
  }

  /** Exactly one terminal event, an error of this kind, and it is the run's result. */
  function expectOneError(outcome: Awaited<ReturnType<typeof run>>, kind: string) {
    expect(outcome.run.result.error?.kind).toBe(kind);
    const terminals = terminalEvents(outcome.events, outcome.run.id);
    expect(terminals.map((e: any) => [e.kind, e.payload.kind])).toEqual([['error', kind]]);
  }

  async function expectNoneLeft(marker: string) {
    await waitFor(() => processesWith(marker).length === 0, `no process with ${marker} in its command line`, 5_000);
  }

  afterEach(async () => {
    await expectNoneLeft('misbehaving-claude');
  });

  it('garbage lines: parse_error within 5 s', async () => {
    const outcome = await run('claude', '[fault:garbage]');
    expectOneError(outcome, 'parse_error');
    expect(outcome.elapsedMs).toBeLessThan(5_000);
  });

  it('a CLI that exits in the middle of a JSON line: parse_error within 5 s', async () => {
    const outcome = await run('claude', '[fault:midline]');
    expectOneError(outcome, 'parse_error');
    expect(outcome.run.result.error.message).toContain('{"type":"assistant"');
    expect(outcome.elapsedMs).toBeLessThan(5_000);
  });

  it('a 50 MB line: buffer_overflow within 10 s, without holding the line', async () => {
    const before = process.memoryUsage().rss;
    const outcome = await run('claude', '[fault:bigline]');
    expectOneError(outcome, 'buffer_overflow');
    expect(outcome.elapsedMs).toBeLessThan(10_000);
    // ASM_MAX_LINE_BYTES (4 MB) is held at most, not the 50 MB.
    expect(process.memoryUsage().rss - before).toBeLessThan(40 * 1024 * 1024);
  });

  it('a CLI that never prints: idle_timeout after idle_timeout_ms, long before the deadline', async () => {
    const marker = sleepMarker();
    const outcome = await run('shell', `sleep ${marker}`, { idle_timeout_ms: 1_000, run_deadline_ms: 120_000 });
    expectOneError(outcome, 'idle_timeout');
    // idle (1 s) + interrupt grace + kill grace, with room for a loaded machine.
    expect(outcome.elapsedMs).toBeLessThan(8_000);
    await expectNoneLeft(marker);
  });

  it('a CLI that closes stdout and keeps running: idle_timeout, and it is stopped', async () => {
    const marker = sleepMarker();
    const outcome = await run('shell', `exec >&- 2>&-; sleep ${marker}`, { idle_timeout_ms: 1_000 });
    expectOneError(outcome, 'idle_timeout');
    expect(outcome.elapsedMs).toBeLessThan(8_000);
    await expectNoneLeft(marker);
  });

  it('a CLI that ignores SIGINT and SIGTERM: user_cancelled within the graces of an interrupt', async () => {
    const marker = sleepMarker();
    const s = await server.request('POST', '/v1/sessions', { provider: 'shell' });
    const ws = server.stream(`session_id=${s.body.id}&after=0`);
    const submitted = await server.request('POST', `/v1/sessions/${s.body.id}/runs`, { prompt: `trap '' INT TERM; echo ready; sleep ${marker}; sleep ${marker}` });
    await ws.event('assistant_delta');
    const interruptedAt = Date.now();
    expect((await server.request('POST', `/v1/runs/${submitted.body.id}/interrupt`)).status).toBeLessThan(300);
    const terminal = await ws.event('error');
    expect(terminal.payload.kind).toBe('user_cancelled');
    // interrupt grace (0.5 s) + kill grace (0.5 s) + stream teardown (0.5 s), with room for load.
    expect(Date.now() - interruptedAt).toBeLessThan(6_000);
    expect(terminalEvents(ws.events(), submitted.body.id)).toHaveLength(1);
    await expectNoneLeft(marker);
  });

  it('children that outlive the CLI, including a setsid double-forked daemon: none survives the run', async () => {
    const marker = sleepMarker();
    const prompt = [
      `sleep ${marker} &`, // a plain background child, in the run's process group
      `(setsid sleep ${marker} &)`, // a daemon in a session of its own, reparented at once
      `(setsid sh -c 'sleep ${marker} & exit' &)`, // double-forked: its parent is gone before it runs
      `nohup sleep ${marker} >/dev/null 2>&1 &`, // with its output away from the run's pipes
      'sleep 0.3; echo started',
    ].join('\n');
    const outcome = await run('shell', prompt);
    expect(outcome.run.state).toBe('completed');
    expect(outcome.run.result.text).toBe('started\n');
    await expectNoneLeft(marker);
  });

  it('100 MB of valid events: quota_exceeded, bounded memory, a bounded result that projects the kept events', async () => {
    const quota = 16 * 1024 * 1024; // ASM_MAX_RUN_OUTPUT_BYTES's default
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    const outcome = await run('claude', '[fault:flood]').finally(() => clearInterval(sampler));
    expectOneError(outcome, 'quota_exceeded');
    console.info(`flood: ${outcome.events.length} events kept, result.text ${outcome.run.result.text.length} bytes, RSS ${mb(before)} → peak ${mb(peak)} MB, ${outcome.elapsedMs} ms`);
    expect(outcome.run.result.text.length).toBeLessThanOrEqual(quota);
    expect(outcome.run.result.text.length).toBeGreaterThan(quota / 2);
    // The result is the projection of the events the service kept, not of everything the CLI printed.
    expect(projectResult(outcome.events)).toEqual(outcome.run.result);
    const single = await server.request('GET', `/v1/runs/${outcome.run.id}`);
    expect(Buffer.byteLength(JSON.stringify(single.body))).toBeLessThan(quota + 1024 * 1024);
    // The quota's events, held once as events and once as the projected text, and the store's copy.
    expect(peak - before).toBeLessThan(400 * 1024 * 1024);
    expect(outcome.elapsedMs).toBeLessThan(60_000);
  });
});
