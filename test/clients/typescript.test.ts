import { afterEach, describe, expect, it } from 'vitest';
import { createClient, openEventStream, type EventStream, type Schemas, type ServerFrame } from '../../src/client/index.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { tenant, tenantsFile } from '../helpers/tenants.js';

/**
 * The TypeScript client (src/client, exported as asm/client) against a live server: typed REST calls
 * with the API key, error bodies as typed errors, and the WebSocket helper's approvals, interrupts and
 * resume by seq after the server closes a slow consumer.
 */

let server: TestServer;
const streams: EventStream[] = [];
afterEach(async () => {
  for (const stream of streams.splice(0)) stream.close();
  await server?.close();
});

function open(options: Parameters<typeof openEventStream>[0]): EventStream {
  const stream = openEventStream(options);
  streams.push(stream);
  return stream;
}

/** The stream's events up to and including the first terminal one. */
async function untilTerminal(stream: EventStream, onEvent: (event: Schemas['Event']) => void = () => {}): Promise<Schemas['Event'][]> {
  const events: Schemas['Event'][] = [];
  for await (const event of stream) {
    events.push(event);
    onEvent(event);
    if (['result', 'error', 'run_completed'].includes(event.kind)) break;
  }
  return events;
}

describe('TypeScript client', () => {
  it('sends the API key, and answers errors as the typed error body', async () => {
    const KEY = 'tenant-key-0123456789abcdef0123456789';
    server = await startServer({ ASM_TENANTS_FILE: tenantsFile([tenant('tenant-a', KEY, { providers: ['shell'] })]) });
    const client = createClient({ baseUrl: server.url, apiKey: KEY });
    const created = await client.POST('/v1/sessions', { body: { provider: 'shell' } });
    expect(created.response.status).toBe(201);
    const session: Schemas['Session'] = created.data!;
    const run = await client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo typed', wait: true } });
    expect(run.data).toMatchObject({ state: 'completed', result: { text: 'typed\n' } });

    const missing = await client.GET('/v1/runs/{id}', { params: { path: { id: 'run_nope' } } });
    expect(missing.response.status).toBe(404);
    expect(missing.error?.error.kind).toBe('not_found');
    const keyless = await createClient({ baseUrl: server.url }).GET('/v1/sessions');
    expect(keyless.error?.error.kind).toBe('unauthorized');
  });

  it('streams a run, approves over the socket, and interrupts over the socket', async () => {
    server = await startServer();
    const client = createClient({ baseUrl: server.url });
    const session = (await client.POST('/v1/sessions', { body: { provider: 'claude' } })).data!;
    const stream = open({ baseUrl: server.url, session_id: session.id, after: 0 });
    await stream.opened;
    const acks: ServerFrame[] = [];
    stream.onFrame((frame) => frame.type === 'ack' && acks.push(frame));

    const approved = (await client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'create a file [fixture:c2-approve]' } })).data!;
    const events = await untilTerminal(stream, (event) => {
      if (event.kind === 'approval_requested') stream.approve(event.payload.approval_id as string, 'allow');
    });
    expect(events.map((e) => e.kind)).toEqual(expect.arrayContaining(['approval_requested', 'approval_resolved', 'result']));
    expect(events.find((e) => e.kind === 'approval_resolved')?.payload).toMatchObject({ decision: 'allow' });
    expect(events.every((e) => e.run_id === approved.id)).toBe(true);
    expect(acks).toHaveLength(1);

    const slow = (await client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'Run the slow job [fixture:c3-interrupt]' } })).data!;
    const stopped = await untilTerminal(stream, (event) => {
      if (event.kind === 'tool_use') stream.interrupt(slow.id);
    });
    expect(stopped.at(-1)).toMatchObject({ kind: 'error', run_id: slow.id, payload: { kind: 'user_cancelled' } });
    const seqs = [...events, ...stopped].map((e) => e.seq);
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0] + i));
    expect((await client.GET('/v1/runs/{id}', { params: { path: { id: slow.id } } })).data?.state).toBe('interrupted');
  });

  it('resumes after the server closes it as a slow consumer (4008): every event once, in order', async () => {
    server = await startServer({ ASM_WS_MAX_BUFFER_BYTES: '2048' });
    const client = createClient({ baseUrl: server.url });
    const session = (await client.POST('/v1/sessions', { body: { provider: 'shell' } })).data!;
    const stream = open({ baseUrl: server.url, session_id: session.id, after: 0 });
    await stream.opened;
    const closes: number[] = [];
    const firstSocket = stream.socket;
    firstSocket.once('close', (code) => closes.push(code));
    // Stop reading, as shell.test.ts does: the server's send buffer fills up and it closes the stream with 4008.
    (firstSocket as any)._socket.pause();
    const run = await client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: `yes "$(printf '%01000d' 0)" | head -n 8000`, wait: true } });
    expect(run.data?.state).toBe('completed');
    (firstSocket as any)._socket.resume();

    const events = await untilTerminal(stream);
    expect(closes).toEqual([4008]);
    expect(stream.resumes).toBeGreaterThanOrEqual(1);
    expect(events[0].seq).toBe(1);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.at(-1)).toMatchObject({ kind: 'result', run_id: run.data?.id });
  });
});
