import { Writable } from 'node:stream';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApp, type AsmApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { buildServer } from '../../src/http/server.js';
import { createLogger } from '../../src/logger.js';
import { SANDBOX_ENV } from '../helpers/sandbox.js';
import { FAKE_CLAUDE } from '../helpers/server.js';

/**
 * x-request-id end to end: a client's id is kept when it is a plain token and replaced otherwise; it
 * comes back on every answer (errors and event streams too), is on each log line of the request, and
 * is stamped on the run the request created (its record and every event).
 */

let app: AsmApp;
let url: string;
let close: () => Promise<void>;
const lines: any[] = [];
const rawLines: string[] = [];

async function start(env: Record<string, string> = {}): Promise<void> {
  lines.length = 0;
  rawLines.length = 0;
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) {
        rawLines.push(line);
        lines.push(JSON.parse(line));
      }
      done();
    },
  });
  const workspace = mkdtempSync(join(tmpdir(), 'asm-reqid-'));
  const config = loadConfig({ ...SANDBOX_ENV, ASM_SANDBOX_ROOT: mkdtempSync(join(tmpdir(), 'asm-reqid-sandbox-')), ASM_WORKSPACE_ROOT: workspace, ASM_CLAUDE_BIN: FAKE_CLAUDE, ...env });
  app = await createApp(config, createLogger('info', sink));
  const server = await buildServer(app);
  await server.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`;
  close = async () => {
    await app.close();
    await server.close();
  };
}
beforeEach(() => start());
afterEach(() => close());

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
  fetch(url + path, { method, headers: { ...(body !== undefined && { 'content-type': 'application/json' }), ...headers }, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });

describe('request ids', () => {
  it('keeps a valid x-request-id: on the answer, on the log lines of the request, on the run and its events', async () => {
    const session = (await (await call('POST', '/v1/sessions', { provider: 'claude' }, { 'x-request-id': 'sess-1' })).json()) as any;
    const res = await call('POST', `/v1/sessions/${session.id}/runs`, { prompt: 'hi [fixture:c1-hello]', wait: true }, { 'x-request-id': 'trace:run.1-A' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('trace:run.1-A');
    const run = (await res.json()) as any;
    expect(run.result.metadata.request_id).toBe('trace:run.1-A');
    const events = ((await (await call('GET', `/v1/runs/${run.id}/events`)).json()) as any).events;
    expect(events.length).toBeGreaterThan(2);
    for (const event of events) expect(event.metadata.request_id).toBe('trace:run.1-A');

    const ofRequest = lines.filter((l) => l.reqId === 'trace:run.1-A');
    expect(ofRequest.map((l) => l.msg)).toEqual(['run finished', 'request completed']);
    // One access line per request, naming what was asked and how it was answered.
    expect(ofRequest.at(-1)).toMatchObject({ req: { method: 'POST', url: `/v1/sessions/${session.id}/runs` }, res: { statusCode: 200 } });
    expect(ofRequest.at(-1)!.responseTime).toBeGreaterThan(0);
    expect(ofRequest.at(-1)!.req.headers).toBeUndefined();
    // The lines the service layers write name the request they serve, and a run's lines name the run too.
    expect(lines.find((l) => l.msg === 'session created')).toMatchObject({ reqId: 'sess-1', sessionId: session.id });
    expect(ofRequest.find((l) => l.msg === 'run finished')).toMatchObject({ runId: run.id, sessionId: session.id });
    expect((await call('DELETE', `/v1/sessions/${session.id}`, undefined, { 'x-request-id': 'close-1' })).status).toBe(200);
    expect(lines.filter((l) => l.reqId === 'close-1').map((l) => l.msg)).toEqual(['session closed', 'request completed']);
    // None carries the key twice (Fastify's child logger binds reqId itself; the context adds it only elsewhere).
    expect(rawLines.filter((line) => line.split('"reqId"').length > 2)).toEqual([]);
    // Every line Fastify writes about a request names it.
    expect(lines.filter((l) => l.req || l.res).every((l) => typeof l.reqId === 'string')).toBe(true);
  });

  it('with ASM_ACCESS_LOG=off writes no access line, while the lines the service writes still name the request', async () => {
    await close();
    await start({ ASM_ACCESS_LOG: 'off' });
    const session = (await (await call('POST', '/v1/sessions', { provider: 'claude' }, { 'x-request-id': 'quiet-1' })).json()) as any;
    const res = await call('POST', `/v1/sessions/${session.id}/runs`, { prompt: 'hi [fixture:c1-hello]', wait: true }, { 'x-request-id': 'quiet-2' });
    expect(res.status).toBe(200);
    expect((await call('GET', '/v1/sessions/nope')).status).toBe(404);
    expect(lines.filter((l) => l.msg === 'request completed' || l.msg === 'incoming request')).toEqual([]);
    expect(lines.find((l) => l.msg === 'session created')).toMatchObject({ reqId: 'quiet-1' });
    expect(lines.filter((l) => l.reqId === 'quiet-2').map((l) => l.msg)).toEqual(['run finished']);
  });

  it('returns the id on errors, and on an SSE stream', async () => {
    const notFound = await call('GET', '/v1/runs/run_missing', undefined, { 'x-request-id': 'e-404' });
    expect(notFound.status).toBe(404);
    expect(notFound.headers.get('x-request-id')).toBe('e-404');
    expect(lines.find((l) => l.reqId === 'e-404' && l.msg === 'request refused')).toMatchObject({ kind: 'not_found' });

    const badJson = await call('POST', '/v1/sessions', '{not json', { 'x-request-id': 'e-400' });
    expect(badJson.status).toBe(400);
    expect(badJson.headers.get('x-request-id')).toBe('e-400');
    const unmatched = await call('DELETE', '/nowhere', undefined, { 'x-request-id': 'e-route' });
    expect(unmatched.headers.get('x-request-id')).toBe('e-route');
    // Refused before routing: a malformed escape, a path parameter longer than any id.
    const badUrl = await call('GET', '/v1/runs/%zz', undefined, { 'x-request-id': 'e-url' });
    expect(badUrl.status).toBe(400);
    expect(badUrl.headers.get('x-request-id')).toBe('e-url');
    const longParam = await call('GET', `/v1/runs/${'r'.repeat(200)}`, undefined, { 'x-request-id': 'e-long' });
    expect(longParam.status).toBeGreaterThanOrEqual(400);
    expect(longParam.headers.get('x-request-id')).toBe('e-long');

    const session = (await (await call('POST', '/v1/sessions', { provider: 'claude' })).json()) as any;
    const run = (await (await call('POST', `/v1/sessions/${session.id}/runs`, { prompt: 'hi [fixture:c1-hello]', wait: true })).json()) as any;
    const sse = await call('GET', `/v1/runs/${run.id}/events`, undefined, { accept: 'text/event-stream', 'x-request-id': 'sse-1' });
    expect(sse.headers.get('content-type')).toBe('text/event-stream');
    expect(sse.headers.get('x-request-id')).toBe('sse-1');
    await sse.text();
  });

  it('replaces an id that is too long or not a plain token by a generated one', async () => {
    for (const bad of ['x'.repeat(129), 'has space', 'quote"d', 'semi;colon', 'per%25cent', '<script>']) {
      const res = await call('GET', '/healthz', undefined, { 'x-request-id': bad });
      const id = res.headers.get('x-request-id')!;
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
    }
    const generated = await call('GET', '/healthz');
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const max = 'a'.repeat(128);
    expect((await call('GET', '/healthz', undefined, { 'x-request-id': max })).headers.get('x-request-id')).toBe(max);
  });
});
