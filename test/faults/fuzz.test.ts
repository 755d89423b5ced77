import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ClientFrame } from '../../src/schemas/ws.js';
import { projectResult } from '../../src/sessions/projection.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { tenant, tenantsFile } from '../helpers/tenants.js';
import { mutated, parameter, type Context, type Schema } from './schema-arbitrary.js';

/**
 * The fuzzer: every operation of openapi/openapi.json and every WebSocket client frame, driven from
 * the schemas with values that fit and values mutated not to (schema-arbitrary.ts), with this
 * tenant's, another tenant's and unknown ids, with and without auth. Every answer is checked: no 5xx,
 * no stack trace, an error body on every refusal; the service's memory stays bounded, and a normal
 * run is still answered correctly afterwards. Only the fake claude may run (the tenants' grant, and
 * ASM_DISABLED_PROVIDERS where auth is off), so no fuzzed prompt reaches a shell.
 */

const OPENAPI: Schema = JSON.parse(readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8'));
const SEED = Number(process.env.ASM_FUZZ_SEED ?? 1_3_2026);
const REQUESTS = Number(process.env.ASM_FUZZ_REQUESTS ?? 10_200);
const FRAMES = Number(process.env.ASM_FUZZ_FRAMES ?? 2_000);
const CONCURRENCY = 8;
const STACK = /"stack"|\n\s+at |node_modules|\.[jt]s:\d+:\d+/;

/**
 * Every provider's CLI is "installed" (the fakes of test/fixtures/bin): a provider whose CLI is
 * missing is refused with 422 cli_not_found by design (README "Providers"), which is the server's
 * state, not the input's. Only claude may run (above), so the other fakes are never started.
 */
const FIXTURE_BIN = new URL('../fixtures/bin/', import.meta.url).pathname;
const INSTALLED_FAKES = {
  ASM_CODEX_BIN: `${FIXTURE_BIN}fake-codex.mjs`,
  ASM_GEMINI_BIN: `${FIXTURE_BIN}fake-gemini.mjs`,
  ASM_AMP_BIN: `${FIXTURE_BIN}fake-amp.mjs`,
};

const KEYS = { a: `key-a-${randomUUID()}`, b: `key-b-${randomUUID()}`, admin: `key-admin-${randomUUID()}` };
const GRANT = { providers: ['claude'] };

interface Operation {
  method: string;
  path: string;
  parameters: Array<{ name: string; in: string; schema: Schema }>;
  body?: Schema;
}

const OPERATIONS: Operation[] = Object.entries(OPENAPI.paths as Record<string, Record<string, any>>).flatMap(([path, ops]) =>
  Object.entries(ops).map(([method, op]) => ({
    method: method.toUpperCase(),
    path,
    parameters: op.parameters ?? [],
    body: op.requestBody?.content?.['application/json']?.schema,
  })),
);

interface FuzzRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
  operation: string;
}

interface Tally {
  requests: number;
  byStatus: Map<number, number>;
  failures: string[];
}

function requestArbitrary(ctx: Context, auth: fc.Arbitrary<Record<string, string>>): fc.Arbitrary<FuzzRequest> {
  return fc.constantFrom(...OPERATIONS).chain((op) => {
    const params = op.parameters.map((p) => {
      const value = parameter(p.schema, ctx, p.name);
      return (p.in === 'path' ? value : fc.option(value, { nil: undefined, freq: 2 })).map((v) => [p, v] as const);
    });
    const body = op.body ? fc.option(mutated(op.body, ctx), { nil: undefined, freq: 8 }) : fc.constant(undefined);
    const rawBody = fc.oneof({ weight: 12, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom('{', 'not json', '{"a":', '\u0000', '[1,2') });
    return fc.tuple(fc.tuple(...params), body, rawBody, auth).map(([values, json, raw, headers]) => {
      let path = op.path;
      const query = new URLSearchParams();
      for (const [p, value] of values) {
        if (value === undefined) continue;
        if (p.in === 'path') path = path.replace(`{${p.name}}`, pathSegment(value));
        else if (p.in === 'query') query.set(p.name, value);
      }
      const text = op.method === 'GET' ? undefined : (raw ?? (json === undefined ? undefined : JSON.stringify(json)));
      const search = query.toString();
      return {
        method: op.method,
        url: `${path}${search ? `?${search}` : ''}`,
        headers: { ...headers, ...(text !== undefined && { 'content-type': 'application/json' }) },
        body: text,
        operation: `${op.method} ${op.path}`,
      };
    });
  });
}

/** A path segment for any string: percent-encoded bytes where encodeURIComponent refuses (a lone surrogate). */
function pathSegment(value: string): string {
  try {
    return encodeURIComponent(value);
  } catch {
    return [...Buffer.from(value)].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).join('');
  }
}

async function send(server: TestServer, request: FuzzRequest, tally: Tally): Promise<void> {
  let status: number;
  let text: string;
  try {
    const response = await fetch(server.url + request.url, { method: request.method, headers: request.headers, body: request.body, signal: AbortSignal.timeout(30_000) });
    status = response.status;
    text = await response.text();
  } catch (err) {
    tally.failures.push(`${request.operation} ${request.url}: no answer (${(err as Error).message})`);
    return;
  }
  tally.requests += 1;
  if (tally.requests % 1_000 === 0) console.info(`fuzz: ${tally.requests} requests`);
  tally.byStatus.set(status, (tally.byStatus.get(status) ?? 0) + 1);
  const where = `${request.operation} ${request.url.slice(0, 200)} body=${(request.body ?? '').slice(0, 200)}`;
  if (status >= 500 && !pausedLaneRefusal(status, text)) tally.failures.push(`${status} for ${where}: ${text.slice(0, 300)}`);
  if (STACK.test(text) && !request.url.startsWith('/metrics')) tally.failures.push(`stack trace for ${where}: ${text.slice(0, 300)}`);
  if (status >= 400) {
    let kind: unknown;
    try {
      kind = JSON.parse(text).error?.kind;
    } catch {
      kind = undefined;
    }
    if (typeof kind !== 'string') tally.failures.push(`${status} without an error body for ${where}: ${text.slice(0, 200)}`);
  }
}

/**
 * The one 5xx a request may get here: the fuzzer pauses lanes (POST /v1/queues/{lane}/pause is an
 * operation), and a request waiting on a paused lane is refused 503 not_ready naming it after
 * ASM_COMMAND_WAIT_MS (test/faults/paused-lanes.test.ts): the operator's pause, not the input.
 */
function pausedLaneRefusal(status: number, text: string): boolean {
  try {
    const error = JSON.parse(text).error;
    return status === 503 && error.kind === 'not_ready' && ['session', 'control', 'system'].includes(error.details?.lane);
  } catch {
    return false;
  }
}

async function drive(server: TestServer, requests: FuzzRequest[], tally: Tally): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < requests.length) await send(server, requests[next++], tally);
    }),
  );
}

/** Sends frames over a few sockets, reopening one the server closed; counts answers that break the contract. */
async function driveFrames(server: TestServer, frames: string[], headers: Record<string, string>, tally: Tally): Promise<void> {
  let socket: WebSocket | null = null;
  const closes = new Map<number, number>();
  let lastFrame = '';
  const open = () =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`${server.wsUrl}/v1/events`, { headers });
      ws.on('message', (data) => {
        const text = data.toString();
        if (STACK.test(text)) tally.failures.push(`stack trace in a WebSocket frame: ${text.slice(0, 300)}`);
        if (JSON.parse(text).type === 'error' && JSON.parse(text).error?.kind === 'unknown') tally.failures.push(`unknown error frame: ${text.slice(0, 300)}`);
      });
      ws.on('close', (code) => {
        closes.set(code, (closes.get(code) ?? 0) + 1);
        // After a frame over the limit the server closes with 1009 while the client may still be
        // writing it; the client then sees a reset (1006) instead of the close frame.
        const oversized = Buffer.byteLength(lastFrame) > 64 * 1024;
        if (code === 1011 || (code === 1006 && !oversized)) tally.failures.push(`WebSocket closed with ${code} after ${lastFrame.slice(0, 200)} (${lastFrame.length} chars)`);
      });
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  for (const [index, frame] of frames.entries()) {
    if (!socket || socket.readyState !== WebSocket.OPEN) socket = await open();
    socket.send(frame);
    lastFrame = frame;
    tally.requests += 1;
    // One round trip now and then, so frames do not all queue in the socket; and after a frame over
    // the 64 KiB limit, which the server answers with 1009 (frames sent after it would meet a reset).
    if (index % 50 === 49 || Buffer.byteLength(frame) > 64 * 1024) await roundTrip(socket);
  }
  socket?.close();
  console.info(`fuzz: WebSocket closes by code ${JSON.stringify(Object.fromEntries(closes))}`);
}

function roundTrip(socket: WebSocket): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      socket.off('pong', done);
      socket.off('close', done);
      resolve();
    };
    socket.once('pong', done);
    socket.once('close', done);
    socket.ping();
  });
}

/** Ids to try: `own` are the caller's objects, `foreign` another tenant's; plus ones that do not exist. */
function idPool(own: string[], foreign: string[]): string[] {
  return [...own, ...foreign, `ses_${randomUUID()}`, `run_${randomUUID()}`, `apr_${randomUUID()}`, 'prompt', 'skill', 'session', 'claude', 'shell'];
}

async function seed(server: TestServer, headers: Record<string, string>): Promise<string[]> {
  const session = await server.request('POST', '/v1/sessions', { provider: 'claude' }, headers);
  expect(session.status, JSON.stringify(session.body)).toBe(201);
  const submitted = await server.request('POST', `/v1/sessions/${session.body.id}/runs`, { prompt: 'hello' }, headers);
  // Waited for here rather than with `wait: true`, which ASM_WAIT_MAX_MS cuts short on a loaded machine.
  expect((await server.app.sessions.waitForRun(submitted.body.id, 30_000)).state).toBe('completed');
  return [session.body.id, submitted.body.id];
}

async function expectHealthyRun(server: TestServer, headers: Record<string, string>, admin: Record<string, string>): Promise<void> {
  // The fuzzer may have paused lanes (POST /v1/queues/{lane}/pause is one of the operations).
  for (const lane of (await server.request('GET', '/v1/queues?limit=100', undefined, admin)).body.queues) {
    expect((await server.request('POST', `/v1/queues/${lane.name}/resume`, undefined, admin)).status).toBeLessThan(300);
  }
  const session = await server.request('POST', '/v1/sessions', { provider: 'claude' }, headers);
  expect(session.status, JSON.stringify(session.body)).toBe(201);
  const submitted = await server.request('POST', `/v1/sessions/${session.body.id}/runs`, { prompt: 'hello' }, headers);
  expect(submitted.status).toBe(202);
  const run = { body: await server.app.sessions.waitForRun(submitted.body.id, 30_000) } as { body: any };
  expect(run.body.state).toBe('completed');
  const events = (await server.request('GET', `/v1/runs/${run.body.id}/events?after=0`, undefined, headers)).body.events;
  expect(projectResult(events)).toEqual(run.body.result);
  expect(run.body.result.text.length).toBeGreaterThan(0);
}

const mb = (bytes: number) => Math.round(bytes / 1024 / 1024);
const servers: TestServer[] = [];
afterAll(async () => {
  for (const server of servers) await server.close();
});

describe('fuzzing the HTTP API and the WebSocket protocol from their schemas', () => {
  it.each([
    ['auth on (two tenants and an admin)', true],
    ['auth off', false],
  ])('%s: no 5xx, no stack trace, bounded memory, and a normal run afterwards', async (_name, auth) => {
    const tenants: Record<string, string> = auth
      ? { ASM_TENANTS_FILE: tenantsFile([tenant('tenant-a', KEYS.a, GRANT), tenant('tenant-b', KEYS.b, GRANT), tenant('ops', KEYS.admin, { role: 'admin' })]) }
      : { ASM_DISABLED_PROVIDERS: 'shell,codex,gemini,amp' };
    const server = await startServer({ ...tenants, ...INSTALLED_FAKES, ASM_RATE_LIMIT: '0', ASM_MAX_SESSIONS: '100000', ASM_WAIT_MAX_MS: '1000', ASM_COMMAND_WAIT_MS: '100' });
    servers.push(server);
    const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
    const headersA = auth ? bearer(KEYS.a) : {};
    const own = await seed(server, headersA);
    const foreign = auth ? await seed(server, bearer(KEYS.b)) : [];
    const ctx: Context = { root: OPENAPI, ids: idPool(own, foreign) };
    const authArbitrary = auth
      ? fc.constantFrom<Record<string, string>>(bearer(KEYS.a), bearer(KEYS.a), bearer(KEYS.b), bearer(KEYS.admin), {}, bearer('wrong'), { authorization: 'Basic eDp5' })
      : fc.constant<Record<string, string>>({});

    const share = auth ? Math.ceil(REQUESTS * 0.6) : Math.floor(REQUESTS * 0.4);
    const requests = fc.sample(requestArbitrary(ctx, authArbitrary), { seed: SEED + (auth ? 1 : 0), numRuns: share });
    const frames = fc
      .sample(mutated(ClientFrame as unknown as Schema, ctx), { seed: SEED + 7, numRuns: FRAMES / 2 })
      .map((frame) => (typeof frame === 'string' ? frame : JSON.stringify(frame)));

    const tally: Tally = { requests: 0, byStatus: new Map(), failures: [] };
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 50);
    const startedAt = Date.now();
    try {
      await drive(server, requests, tally);
      await driveFrames(server, frames, headersA, tally);
    } finally {
      clearInterval(sampler);
    }
    const statuses = Object.fromEntries([...tally.byStatus].sort(([a], [b]) => a - b));
    console.info(
      `fuzz ${auth ? 'auth on' : 'auth off'}: ${requests.length} HTTP requests over ${OPERATIONS.length} operations + ${frames.length} WebSocket frames in ${Date.now() - startedAt} ms; statuses ${JSON.stringify(statuses)}; RSS ${mb(rssBefore)} → peak ${mb(rssPeak)} → ${mb(process.memoryUsage().rss)} MB; failures ${tally.failures.length}`,
    );
    for (const failure of tally.failures.slice(0, 20)) console.info(`fuzz failure: ${failure}`);
    expect(tally.failures.slice(0, 20)).toEqual([]);
    expect(tally.requests).toBe(requests.length + frames.length);
    // Every operation of openapi.json was tried.
    expect(new Set(requests.map((r) => r.operation)).size).toBe(OPERATIONS.length);
    expect(rssPeak - rssBefore).toBeLessThan(512 * 1024 * 1024);
    // The service still answers a normal run correctly.
    await expectHealthyRun(server, headersA, auth ? bearer(KEYS.admin) : {});
  }, 600_000);
});
