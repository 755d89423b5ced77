import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { workerProcess } from '../helpers/processes.js';
import { scratchDir } from '../helpers/sandbox.js';
import { FAKE_CLAUDE, startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';
import { parseExposition, sample } from './exposition.js';

/**
 * OpenTelemetry spans: this process's in memory (the SDK registered with an InMemorySpanExporter), a
 * worker node's sent by its own SDK over OTLP/HTTP (switched on by OTEL_TRACES_EXPORTER=otlp) to a
 * collector in this test. One trace runs from the client's request through the lane commands, the run
 * and its approval, on whichever process executes them.
 */

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
beforeAll(() => {
  provider.register();
});
afterAll(() => provider.shutdown());

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT_SPAN = '00f067aa0ba902b7';
const traceparent = `00-${TRACE_ID}-${CLIENT_SPAN}-01`;

const spans = (name: string) => exporter.getFinishedSpans().filter((s) => s.name === name);
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

describe('traces, in one process', () => {
  let server: TestServer;
  beforeEach(async () => {
    exporter.reset();
    server = await startServer();
  });
  afterEach(() => server.close());

  it('continues the caller\'s trace through the request, the lane commands, the run and its approval', async () => {
    const s = (await server.request('POST', '/v1/sessions', { provider: 'claude' })).body;
    const ws = server.stream(`session_id=${s.id}&after=0`);
    const created = await server.request('POST', `/v1/sessions/${s.id}/runs`, { prompt: 'create a file [fixture:c2-approve]' }, { traceparent, 'x-request-id': 'client-req.42' });
    expect(created.status).toBe(202);
    expect(created.headers.get('x-request-id')).toBe('client-req.42');
    const requested = await ws.event('approval_requested');
    expect((await server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' })).status).toBe(200);
    await ws.event('result');

    const request = await waitFor(() => spans('POST /v1/sessions/:id/runs')[0], 'the request span');
    expect(request.spanContext().traceId).toBe(TRACE_ID);
    expect(parentOf(request)).toBe(CLIENT_SPAN);
    expect(request.attributes).toMatchObject({ 'http.route': '/v1/sessions/:id/runs', 'http.response.status_code': 202, 'asm.request_id': 'client-req.42' });

    // The run records the request's trace and id; every event of it carries them.
    const run = (await server.request('GET', `/v1/runs/${created.body.id}`)).body;
    expect(run.result.metadata.request_id).toBe('client-req.42');
    expect(run.result.metadata.traceparent).toBe(`00-${TRACE_ID}-${request.spanContext().spanId}-01`);

    const execute = await waitFor(() => spans('lane run.execute')[0], 'the run.execute command span');
    expect(execute.spanContext().traceId).toBe(TRACE_ID);
    expect(parentOf(execute)).toBe(request.spanContext().spanId);
    expect(execute.attributes).toMatchObject({ 'asm.lane': 'prompt', 'asm.command.attempt': 1 });
    const runSpan = await waitFor(() => spans('run')[0], 'the run span');
    expect(parentOf(runSpan)).toBe(execute.spanContext().spanId);
    expect(runSpan.attributes).toMatchObject({ 'asm.run_id': run.id, 'asm.provider': 'claude', 'asm.backend': 'core', 'asm.run_state': 'completed' });

    // The approval lies in the run's trace, from its request to its decision, linked to the deciding request.
    const approval = await waitFor(() => spans('approval')[0], 'the approval span');
    expect(approval.spanContext().traceId).toBe(TRACE_ID);
    expect(approval.attributes).toMatchObject({ 'asm.approval_id': requested.payload.approval_id, 'asm.approval.decision': 'allow' });
    const decide = await waitFor(() => spans('lane approval.decide')[0], 'the approval.decide command span');
    const decision = await waitFor(() => spans('POST /v1/approvals/:id')[0], 'the decision request span');
    expect(parentOf(decide)).toBe(decision.spanContext().spanId);
    expect(approval.links.map((l) => l.context.spanId)).toEqual([decide.spanContext().spanId]);
  });

  it('starts a trace for a request without traceparent, and refuses no request over a malformed one', async () => {
    const res = await server.request('GET', '/v1/sessions', undefined, { traceparent: 'garbage' });
    expect(res.status).toBe(200);
    const request = await waitFor(() => spans('GET /v1/sessions')[0], 'the request span');
    expect(request.spanContext().traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(parentOf(request)).toBeUndefined();
  });
});

describe('traces across processes', () => {
  let collector: Server;
  const exported: any[] = [];
  beforeAll(async () => {
    // An OTLP/HTTP receiver: the exporter posts JSON to /v1/traces.
    collector = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        if (req.url === '/v1/traces') exported.push(JSON.parse(body));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise<void>((resolve) => collector.close(() => resolve())));

  it('continues a remote_node run\'s trace on the worker node that executes it, which counts the run in its own /metrics', async () => {
    exporter.reset();
    const prefix = `trc-${randomUUID().slice(0, 8)}`;
    const shared = { REDIS_URL: inject('asmTestRedisUrl'), ASM_REDIS_PREFIX: prefix, ASM_NODE_HEARTBEAT_MS: '200', ASM_NODE_TTL_MS: '1500', ASM_SWEEP_MS: '100' };
    const dir = scratchDir('asm-tracing-');
    const root = join(dir, 'worker-root');
    mkdirSync(root);
    const api = await startServer(shared);
    const { port } = collector.address() as { port: number };
    const metricsPort = await freePort();
    const worker = workerProcess(['--name', 'tw1', '--workspace-root', root, '--metrics-port', String(metricsPort)], {
      ...shared,
      ASM_CLAUDE_BIN: FAKE_CLAUDE,
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_SERVICE_NAME: 'asm-worker-under-test',
      OTEL_BSP_SCHEDULE_DELAY: '50',
    });
    try {
      await waitFor(async () => {
        if (worker.child.exitCode !== null) throw new Error(`worker exited:\n${worker.output()}`);
        return ((await api.request('GET', '/v1/nodes')).body.nodes as any[]).some((n) => n.name === 'tw1' && n.state === 'ready');
      }, 'the worker to be ready', 20_000);
      const s = (await api.request('POST', '/v1/sessions', { provider: 'claude', execution_mode: 'remote_node', driver_opts: { remote_node: 'tw1' } })).body;
      const run = (await api.request('POST', `/v1/sessions/${s.id}/runs`, { prompt: 'hello [fixture:c1-hello]', wait: true }, { traceparent })).body;
      expect(run.state).toBe('completed');
      expect(run.result.metadata.node).toBe('tw1');

      // The worker's spans reach the collector over OTLP, in the client's trace.
      const workerSpans = await waitFor(() => {
        const all = exported.flatMap((body) =>
          body.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans.map((span: any) => ({ ...span, resource: rs.resource }))))
        );
        return all.some((span: any) => span.name === 'run') && all;
      }, 'the worker\'s run span', 15_000);
      const remoteRun = workerSpans.find((span: any) => span.name === 'run');
      expect(remoteRun.traceId).toBe(TRACE_ID);
      expect(remoteRun.resource.attributes).toContainEqual({ key: 'service.name', value: { stringValue: 'asm-worker-under-test' } });
      const remoteCommand = workerSpans.find((span: any) => span.name === 'lane run.execute');
      expect(remoteCommand.traceId).toBe(TRACE_ID);
      expect(remoteRun.parentSpanId).toBe(remoteCommand.spanId);
      // That command continues the trace of the request which created the run, here on the API process.
      const request = await waitFor(() => spans('POST /v1/sessions/:id/runs')[0], 'the request span');
      expect(remoteCommand.parentSpanId).toBe(request.spanContext().spanId);

      // The worker counts the run it executed; the API process, which only handed it over, does not.
      const finished = { provider: 'claude', backend: 'core', queue: 'prompt', state: 'completed', error_kind: 'none' };
      const onWorker = parseExposition(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
      expect(sample(onWorker, 'asm_runs_finished_total', finished)).toBe(1);
      expect(sample(onWorker, 'asm_runs_started_total', { provider: 'claude', backend: 'core', queue: 'prompt' })).toBe(1);
      const onApi = parseExposition((await api.request('GET', '/metrics')).body);
      expect(sample(onApi, 'asm_runs_finished_total', finished)).toBeUndefined();
      expect(sample(onApi, 'asm_events_appended_total', { kind: 'run_queued' })).toBe(1);
    } finally {
      worker.child.kill('SIGTERM');
      await worker.exited;
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
