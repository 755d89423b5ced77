/**
 * openapi/asyncapi.json, the WebSocket protocol of GET /v1/events, is generated from src/schemas
 * (npm run openapi) and describes the frames a real server sends and takes: every frame of a real
 * session (subscribed, events, queue events, acks, errors) validates against its server messages,
 * and every client frame sent here against its client messages.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ASYNCAPI_PATH, generateAsyncApi } from '../../scripts/openapi.js';
import { startServer, type TestServer } from '../helpers/server.js';

const committed = readFileSync(ASYNCAPI_PATH, 'utf8');
const doc = JSON.parse(committed);
const messages: Record<string, { payload: object }> = doc.channels.events.messages;
const ajv = new Ajv({ strict: false, allErrors: true });
/** One validator per side: a frame is valid when some message of that side accepts it. */
const side = (prefix: string) => {
  const checks = Object.entries(messages)
    .filter(([name]) => name.startsWith(prefix))
    .map(([name, message]) => [name, ajv.compile(message.payload)] as const);
  return (frame: unknown) => {
    const passing = checks.filter(([, check]) => check(frame)).map(([name]) => name);
    return { frame, passing };
  };
};
const serverFrame = side('server_');
const clientFrame = side('client_');

let server: TestServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(() => server?.close());

describe('openapi/asyncapi.json', () => {
  it('is what the schemas generate now (else: npm run openapi), an AsyncAPI 3 document of every frame', () => {
    expect(committed).toBe(generateAsyncApi());
    expect(doc.asyncapi).toBe('3.0.0');
    expect(doc.channels.events.address).toBe('/v1/events');
    expect(Object.keys(messages).sort()).toEqual(
      ['client_approve', 'client_interrupt', 'client_subscribe', 'client_unsubscribe', 'server_ack', 'server_error', 'server_event', 'server_queue_event', 'server_subscribed'].sort(),
    );
    expect(doc.info.description).toContain('4008');
    expect(committed).not.toMatch(/\/tmp\/|\/work\//);
  });

  it('describes every frame of a real stream: subscribe, events, queue events, acks and errors', async () => {
    const session = (await server.request('POST', '/v1/sessions', { provider: 'shell' })).body;
    const stream = server.stream(`session_id=${session.id}&queue_events=true&after=0`);
    await stream.opened;
    // From here on: the subscribed frame may have come with the upgrade's answer, before this listener.
    const binary: boolean[] = [];
    const framesBefore = stream.frames.length;
    stream.socket.on('message', (_data, isBinary) => binary.push(isBinary));
    const sent: unknown[] = [];
    const send = (frame: unknown) => {
      sent.push(frame);
      stream.send(frame);
    };
    await stream.next((f) => f.type === 'subscribed');
    const run = (await server.request('POST', `/v1/sessions/${session.id}/runs`, { prompt: 'echo frames' })).body;
    await stream.event('result', (e) => e.run_id === run.id);
    await stream.next((f) => f.type === 'queue_event');
    const sleeper = (await server.request('POST', `/v1/sessions/${session.id}/runs`, { prompt: 'sleep 30' })).body;
    await stream.event('run_started', (e) => e.run_id === sleeper.id);
    send({ type: 'interrupt', run_id: sleeper.id, request_id: 'r1' });
    await stream.next((f) => f.type === 'ack' && f.request_id === 'r1');
    await stream.event('error', (e) => e.run_id === sleeper.id);
    send({ type: 'approve', approval_id: 'appr_nope', decision: 'allow', request_id: 'r2' });
    await stream.next((f) => f.type === 'error' && f.request_id === 'r2');
    send({ type: 'subscribe', session_id: session.id, kinds: ['result'], after: 0 });
    await stream.next((f) => f.type === 'subscribed' && f.last_seq === 0);
    send({ type: 'unsubscribe' });
    await stream.next((f) => f.type === 'ack' && f.unsubscribed === true);
    // A frame the protocol does not have: the server answers with an error frame, which the document describes too.
    stream.send({ type: 'subscribe', kinds: ['no_such_kind'] });
    await stream.next((f) => f.type === 'error' && f.request_id === null);

    const types = new Set(stream.frames.map((f) => f.type));
    expect([...types].sort()).toEqual(['ack', 'error', 'event', 'queue_event', 'subscribed']);
    for (const frame of stream.frames) expect(serverFrame(frame).passing, JSON.stringify(frame)).toHaveLength(1);
    // Every frame is text, events included (written once for all their streams): a browser's
    // WebSocket would hand a binary one over as a Blob.
    expect(binary).toHaveLength(stream.frames.length - framesBefore);
    expect(binary.every((isBinary) => !isBinary)).toBe(true);
    for (const frame of sent) expect(clientFrame(frame).passing, JSON.stringify(frame)).toHaveLength(1);
    // And the document is strict enough to refuse what the server would refuse.
    expect(clientFrame({ type: 'subscribe', kinds: ['no_such_kind'] }).passing).toEqual([]);
    expect(serverFrame({ type: 'event', event: { kind: 'result' } }).passing).toEqual([]);
  });
});
