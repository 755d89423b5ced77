/**
 * Distributed mode end to end: real `asm serve` processes sharing the private test redis-server,
 * each with its own key prefix per test. Runs execute wherever BullMQ hands their job; a second
 * process is started only once a run is in flight on the first, so that the run is known to execute
 * in A while the client talks to B.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createClient, type AsmClient } from '../../src/client/index.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { FAKE_CLAUDE, reply, StreamClient, TERMINAL } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';
import { serveProcess, untilServing, type ServeProcess } from '../helpers/processes.js';

const redisUrl = inject('asmTestRedisUrl');
const cleanups: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Api {
  url: string;
  proc: ServeProcess;
  /** The generated client (src/client) on this process. */
  client: AsmClient;
  stream(query: string): StreamClient;
}

/** A process's log lines about `runId`, and its warnings and errors. */
function linesAbout(proc: ServeProcess, runId: string): string {
  return proc.output().split('\n').filter((line) => line.includes(runId) || /"level":(40|50|60)/.test(line)).join('\n');
}

/** One deployment: a key prefix, a workspace root, and as many API processes as a test starts. */
function deployment(extraEnv: Record<string, string> = {}) {
  const prefix = `dist-${randomUUID().slice(0, 8)}`;
  const workspace = mkdtempSync(join(tmpdir(), 'asm-dist-'));
  const log = join(workspace, 'claude-stdin.log');
  cleanups.push(() => rmSync(workspace, { recursive: true, force: true }));
  const env = {
    REDIS_URL: redisUrl,
    ASM_REDIS_PREFIX: prefix,
    ASM_WORKSPACE_ROOT: workspace,
    ASM_CLAUDE_BIN: FAKE_CLAUDE,
    FAKE_CLAUDE_LOG: log,
    ASM_PASS_ENV: 'FAKE_CLAUDE_LOG',
    ASM_NODE_HEARTBEAT_MS: '200',
    ASM_NODE_TTL_MS: '1500',
    ASM_SWEEP_MS: '100',
    ASM_JOB_LOCK_MS: '2000',
    ASM_STALLED_INTERVAL_MS: '1000',
    ...extraEnv,
  };
  return {
    workspace,
    stdinLog: () => readJsonLines(log),
    async start(name: string, more: Record<string, string> = {}): Promise<Api> {
      const port = await freePort();
      const proc = serveProcess({ ...env, ASM_NODE_NAME: name, ASM_PORT: String(port), ...more });
      cleanups.push(() => {
        proc.child.kill('SIGKILL');
      });
      const url = `http://127.0.0.1:${port}`;
      await untilServing(url).catch((err) => {
        throw new Error(`${err.message}\n${proc.output()}`);
      });
      const clients: StreamClient[] = [];
      cleanups.push(() => clients.forEach((c) => c.close()));
      return {
        url,
        proc,
        client: createClient({ baseUrl: url }),
        stream(query) {
          const client = new StreamClient(`${url.replace('http', 'ws')}/v1/events?${query}`);
          clients.push(client);
          return client;
        },
      };
    },
  };
}

function contiguous(events: Array<{ seq: number }>, from: number): void {
  expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => from + i));
}

describe('distributed mode: two API processes on one Redis', () => {
  it('creates on A, streams on B, approves on B and interrupts on B a run executing in A', async () => {
    const d = deployment();
    const a = await d.start('api-a');
    // These processes load the installed SDKs; the fake CLI speaks only the core lane's protocol.
    const session = (await reply(a.client.POST('/v1/sessions', { body: { provider: 'claude', lane: 'core' } }))).body;
    const approveRun = (await reply(a.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'create a file [fixture:c2-approve]' } }))).body;
    const onA = a.stream(`session_id=${session.id}&after=0`);
    const requested = await onA.event('approval_requested');

    // B joins once the run executes in A: everything it knows comes from Redis.
    const b = await d.start('api-b');
    expect((await reply(b.client.GET('/v1/sessions/{id}', { params: { path: { id: session.id } } }))).body).toMatchObject({ id: session.id, provider: 'claude' });
    const nodes = (await reply(b.client.GET('/v1/nodes'))).body.nodes;
    expect(nodes.map((n: any) => n.name).sort()).toEqual(['api-a', 'api-b']);
    const onB = b.stream(`session_id=${session.id}&after=0`);
    expect((await onB.event('approval_requested')).seq).toBe(requested.seq);

    const decided = await reply(b.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'allow' } }));
    expect(decided.status).toBe(200);
    expect(decided.body).toMatchObject({ state: 'resolved', decision: 'allow' });
    const resultOnB = await onB.event('result');
    expect(resultOnB.run_id).toBe(approveRun.id);
    const answer = d.stdinLog().find((l) => l.type === 'control_response');
    expect(answer.response.response.behavior).toBe('allow');
    expect((await reply(b.client.GET('/v1/runs/{id}', { params: { path: { id: approveRun.id } } }))).body.state).toBe('completed');
    expect((await reply(b.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'deny' } }))).status).toBe(409);

    // The same stream on both processes: same events, same seqs, no gap.
    await onA.event('result');
    expect(onB.events().map((e) => [e.seq, e.kind])).toEqual(onA.events().map((e) => [e.seq, e.kind]));
    contiguous(onB.events(), 1);

    // Interrupt on B while the run is in a tool on whichever process took it.
    const slow = (await reply(b.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'slow job [fixture:c3-interrupt]' } }))).body;
    await onB.event('tool_use', (e) => e.run_id === slow.id);
    expect((await reply(b.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: slow.id } } }))).status).toBe(202);
    const terminal = await onA.next((f) => f.type === 'event' && f.event.run_id === slow.id && TERMINAL.has(f.event.kind));
    expect(terminal.event.payload).toMatchObject({ kind: 'user_cancelled' });
    expect((await reply(a.client.GET('/v1/runs/{id}', { params: { path: { id: slow.id } } }))).body.state).toBe('interrupted');
    expect(d.stdinLog().some((l) => l.type === 'control_request' && l.request?.subtype === 'interrupt')).toBe(true);
  }, 60_000);

  it('interrupts from B a run that A executes: the request is handed to A, which holds the CLI', async () => {
    const d = deployment();
    const a = await d.start('api-a');
    const session = (await reply(a.client.POST('/v1/sessions', { body: { provider: 'claude', lane: 'core' } }))).body;
    const run = (await reply(a.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'slow job [fixture:c3-interrupt]' } }))).body;
    const onA = a.stream(`session_id=${session.id}&after=0`);
    await onA.event('tool_use');
    const b = await d.start('api-b');
    const res = await reply(b.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.id } } }));
    expect(res.status).toBe(202);
    const terminal = await onA.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect(terminal.event.payload).toMatchObject({ kind: 'user_cancelled' });
  }, 60_000);

  it('fires an approval deadline after the process that recorded it died, then ends its run as node_lost', async () => {
    const d = deployment({ ASM_NODE_TTL_MS: '6000' });
    // Both processes are up before the run, so the approval's window holds no process start-up; the
    // one that executes the run (either may take its lane job) is the one killed.
    const apis = [await d.start('api-a'), await d.start('api-b')];
    const session = (await reply(apis[0].client.POST('/v1/sessions', { body: { provider: 'claude', lane: 'core', approval_timeout_ms: 4_000 } }))).body;
    const run = (await reply(apis[0].client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'create a file [fixture:c2-approve]' } }))).body;
    const watch = apis[0].stream(`session_id=${session.id}&after=0`);
    const started = await watch.event('run_started');
    const requested = await watch.event('approval_requested');
    const [a, b] = started.payload.node === 'api-a' ? apis : [apis[1], apis[0]];
    a.proc.child.kill('SIGKILL');
    await a.proc.exited;
    expect((await reply(b.client.GET('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } } }))).body.state).toBe('pending');

    const onB = b.stream(`session_id=${session.id}&after=0`);
    const resolved = await onB.event('approval_resolved', () => true);
    expect(resolved.payload).toEqual({ approval_id: requested.payload.approval_id, decision: 'deny', reason: 'timeout' });
    expect(Date.parse(resolved.timestamp)).toBeGreaterThanOrEqual(Date.parse(requested.payload.expires_at));
    const approval = (await reply(b.client.GET('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } } }))).body;
    expect(approval).toMatchObject({ state: 'resolved', decision: 'deny', reason: 'timeout' });

    // The run itself went down with A: once A's heartbeat is stale, B ends it.
    const terminal = await onB.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind), 20_000);
    expect(terminal.event.payload).toMatchObject({ kind: 'node_lost', domain: 'runtime' });
    expect(onB.events().filter((e) => TERMINAL.has(e.kind))).toHaveLength(1);
    const final = (await reply(b.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body;
    expect(final).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost' } } });
    contiguous(onB.events(), 1);
  }, 60_000);
});

describe('distributed mode: SIGKILL and restart', () => {
  it('keeps sessions, runs and events, and a resume from the last seen seq yields exactly the rest', async () => {
    const d = deployment();
    const first = await d.start('api-a');
    const session = (await reply(first.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    const done = (await reply(first.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo before', wait: true } }))).body;
    expect(done.state).toBe('completed');
    const run = (
      await reply(first.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; sleep 0.2; done' } }))
    ).body;
    const ws = first.stream(`session_id=${session.id}&after=0`);
    await ws.event('assistant_delta', (e) => e.run_id === run.id && e.payload.content === 'line2\n');
    first.proc.child.kill('SIGKILL');
    await first.proc.exited;
    await ws.closed;
    const seen = ws.events();
    const lastSeen = seen[seen.length - 1].seq;
    contiguous(seen, 1);

    const restarted = await d.start('api-a');
    expect((await reply(restarted.client.GET('/v1/sessions/{id}', { params: { path: { id: session.id } } }))).body).toMatchObject({ id: session.id, state: 'open' });
    expect((await reply(restarted.client.GET('/v1/runs/{id}', { params: { path: { id: done.id } } }))).body).toMatchObject({ state: 'completed', result: { text: 'before\n' } });

    const resumed = restarted.stream(`session_id=${session.id}&after=${lastSeen}`);
    // It failed twice in full runs: the run's end was appended while the resume subscribed, and its read
    // overtook the append (fixed in redis-events.ts, tested by the store contract's "misses nothing
    // between a read…"). Should it fail again, each process's lines about the run say why.
    const terminal = await resumed.next((f) => f.type === 'event' && f.event.run_id === run.id && TERMINAL.has(f.event.kind), 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\nthe restarted process:\n${linesAbout(restarted.proc, run.id)}\nthe killed one:\n${linesAbout(first.proc, run.id)}`);
    });
    expect(terminal.event.payload).toMatchObject({ kind: 'node_lost' });
    const rest = resumed.events();
    contiguous(rest, lastSeen + 1);
    // Exactly the stored log: what was seen before the kill plus what the resume delivered.
    const page = (await reply(restarted.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id }, query: { limit: 1000 } } }))).body.events;
    const stitched = [...seen, ...rest].filter((e) => e.run_id === run.id);
    expect(stitched.map((e: any) => e.id)).toEqual(page.map((e: any) => e.id));
    expect((await reply(restarted.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('failed');

    // The session goes on: a new run on the restarted process.
    const after = (await reply(restarted.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo after', wait: true } }))).body;
    expect(after).toMatchObject({ state: 'completed', result: { text: 'after\n' } });
  }, 60_000);
});
