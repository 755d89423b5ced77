import { Type, type Static } from '@sinclair/typebox';
import { Approval, ApprovalDecisionValue, ErrorResponse, Id } from './api.js';
import { AsmEventSchema, EVENT_KINDS, LaneMetadata } from './events.js';

// ---- what a client sends: the query of GET /v1/events and its frames ----

export const EventStreamQuery = Type.Object(
  {
    session_id: Type.Optional(Id),
    run_id: Type.Optional(Id),
    kinds: Type.Optional(Type.String({ description: 'Comma-separated event kinds' })),
    after: Type.Optional(Type.Integer({ minimum: 0, description: 'Replay events after this seq (needs session_id or run_id)' })),
    queue_events: Type.Optional(Type.Boolean({ description: 'Also stream queue-lane events' })),
    token: Type.Optional(Type.String({ description: 'API key, for clients that cannot set headers' })),
  },
  { additionalProperties: false },
);
export type EventStreamQuery = Static<typeof EventStreamQuery>;

const EventKindList = Type.Array(Type.Union(EVENT_KINDS.map((k) => Type.Literal(k))), { maxItems: EVENT_KINDS.length });

export const ClientFrame = Type.Union([
  Type.Object(
    {
      type: Type.Literal('subscribe'),
      session_id: Type.Optional(Id),
      run_id: Type.Optional(Id),
      kinds: Type.Optional(EventKindList),
      after: Type.Optional(Type.Integer({ minimum: 0 })),
      queue_events: Type.Optional(Type.Boolean()),
    },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('unsubscribe') }, { additionalProperties: false }),
  Type.Object(
    {
      type: Type.Literal('approve'),
      approval_id: Id,
      decision: ApprovalDecisionValue,
      reason: Type.Optional(Type.String({ maxLength: 2000 })),
      request_id: Type.Optional(Type.String({ maxLength: 128 })),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('interrupt'), run_id: Id, request_id: Type.Optional(Type.String({ maxLength: 128 })) },
    { additionalProperties: false },
  ),
]);
export type ClientFrame = Static<typeof ClientFrame>;

/** The largest client frame; a larger one closes the socket with WS_CLOSE_MESSAGE_TOO_BIG (no client frame needs that much). */
export const WS_MAX_CLIENT_FRAME_BYTES = 64 * 1024;
/** Close code (1009, message too big) for a client frame over WS_MAX_CLIENT_FRAME_BYTES. */
export const WS_CLOSE_MESSAGE_TOO_BIG = 1009;
/** Close code sent to a consumer that fell more than ASM_WS_MAX_BUFFER_BYTES behind. */
export const WS_CLOSE_SLOW_CONSUMER = 4008;
/** Close code (1011, internal error) for a stream the store could not keep serving; resume from `last_seq`. */
export const WS_CLOSE_EVENTS_UNAVAILABLE = 1011;
/** Close code for an unauthenticated or forbidden stream. */
export const WS_CLOSE_UNAUTHORIZED = 4001;

/**
 * The WebSocket protocol of `GET /v1/events`: every frame the server sends, beside the client frames
 * (api.ts ClientFrame), and the AsyncAPI 3 document built from them, which `npm run openapi` writes
 * to openapi/asyncapi.json next to openapi.json (README "WebSocket event stream" says the same in prose).
 */

const RequestId = Type.Union([Type.String(), Type.Null()], { description: 'The client frame\'s request_id, echoed; null when it gave none' });

const QUEUE_EVENT_KEYS = [
  'queue.command.submitted',
  'queue.command.started',
  'queue.command.completed',
  'queue.command.retry',
  'queue.command.dead_lettered',
  'queue.command.failed',
  'queue.command.timeout',
  'queue.command.cancelled',
  'queue.lane.pressure',
  'queue.lane.idle',
  'queue.shutdown.started',
  'queue.shutdown.complete',
] as const;

export const EventFrame = Type.Object({ type: Type.Literal('event'), event: AsmEventSchema }, { additionalProperties: false, title: 'EventFrame' });
export const QueueEventFrame = Type.Object(
  {
    type: Type.Literal('queue_event'),
    event: Type.Object(
      {
        key: Type.Union(QUEUE_EVENT_KEYS.map((k) => Type.Literal(k))),
        payload: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
        timestamp: Type.Number({ description: 'Milliseconds since the epoch' }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false, title: 'QueueEventFrame' },
);
export const SubscribedFrame = Type.Object(
  {
    type: Type.Literal('subscribed'),
    session_id: Type.Union([Type.String(), Type.Null()]),
    run_id: Type.Union([Type.String(), Type.Null()]),
    last_seq: Type.Integer({ minimum: 0, description: 'The last seq delivered before this subscription took effect' }),
  },
  { additionalProperties: false, title: 'SubscribedFrame' },
);
export const AckFrame = Type.Union(
  [
    Type.Object({ type: Type.Literal('ack'), request_id: Type.Null(), unsubscribed: Type.Literal(true) }, { additionalProperties: false }),
    Type.Object({ type: Type.Literal('ack'), request_id: RequestId, approval: Approval }, { additionalProperties: false }),
    Type.Object(
      { type: Type.Literal('ack'), request_id: RequestId, run: Type.Object({ id: Type.String(), state: Type.String() }, { additionalProperties: false }) },
      { additionalProperties: false },
    ),
  ],
  { title: 'AckFrame', description: 'The answer to unsubscribe, approve (the resolved approval) or interrupt (the run as it stands)' },
);
export const ErrorFrame = Type.Object(
  { type: Type.Literal('error'), request_id: RequestId, error: ErrorResponse.properties.error },
  { additionalProperties: false, title: 'ErrorFrame', description: 'A refused client frame (the socket stays open), naming the field' },
);

export const ServerFrame = Type.Union([EventFrame, QueueEventFrame, SubscribedFrame, AckFrame, ErrorFrame]);
export type ServerFrame = Static<typeof ServerFrame>;

const CLOSE_CODES = {
  [WS_CLOSE_SLOW_CONSUMER]: 'slow_consumer: more than ASM_WS_MAX_BUFFER_BYTES behind; the reason is {"reason":"slow_consumer","last_seq":N}; reconnect with after=N',
  [WS_CLOSE_EVENTS_UNAVAILABLE]: 'events_unavailable: the store could not keep serving; the reason is {"reason":"events_unavailable","last_seq":N}',
  [WS_CLOSE_UNAUTHORIZED]: 'unauthorized or forbidden stream',
  [WS_CLOSE_MESSAGE_TOO_BIG]: 'message too big: a client frame over 64 KiB (WS_MAX_CLIENT_FRAME_BYTES)',
};

/** Schemas the frames reference by $id, inlined so each message's payload stands alone. */
const NAMED: Record<string, object> = { EventMetadata: LaneMetadata, Event: AsmEventSchema, Approval };

/** A schema as plain JSON: named references replaced by their schema, ids dropped. */
function inline(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(inline);
  if (schema === null || typeof schema !== 'object') return schema;
  const { $id: _named, ...rest } = schema as Record<string, unknown>;
  if (typeof rest.$ref === 'string' && NAMED[rest.$ref]) return inline(NAMED[rest.$ref]);
  return Object.fromEntries(Object.entries(rest).map(([key, value]) => [key, inline(value)]));
}

/** The AsyncAPI 3.0 document of the event stream: one channel, the client frames it receives and the server frames it sends. */
export function asyncApiDocument(version: string): Record<string, unknown> {
  const schemaOf = (schema: object) => inline(schema) as Record<string, unknown>;
  const clientFrames = { subscribe: 0, unsubscribe: 1, approve: 2, interrupt: 3 } as const;
  const messages: Record<string, unknown> = {};
  for (const [name, index] of Object.entries(clientFrames)) {
    messages[`client_${name}`] = { name: `${name} (client)`, payload: schemaOf(ClientFrame.anyOf[index]) };
  }
  const serverFrames = { event: EventFrame, queue_event: QueueEventFrame, subscribed: SubscribedFrame, ack: AckFrame, error: ErrorFrame };
  for (const [name, schema] of Object.entries(serverFrames)) messages[`server_${name}`] = { name: `${name} (server)`, payload: schemaOf(schema) };
  const refs = (prefix: string) => Object.keys(messages).filter((m) => m.startsWith(prefix)).map((m) => ({ $ref: `#/channels/events/messages/${m}` }));
  return {
    asyncapi: '3.0.0',
    info: {
      title: 'ASM event stream',
      version,
      description: `JSON text frames over a WebSocket at GET /v1/events. Heartbeats are WebSocket ping/pong. Close codes: ${Object.entries(CLOSE_CODES)
        .map(([code, meaning]) => `${code} ${meaning}`)
        .join('; ')}.`,
    },
    channels: {
      events: {
        address: '/v1/events',
        bindings: { ws: { method: 'GET', query: schemaOf(EventStreamQuery) } },
        messages,
      },
    },
    operations: {
      receiveClientFrames: { action: 'receive', channel: { $ref: '#/channels/events' }, messages: refs('client_') },
      sendServerFrames: { action: 'send', channel: { $ref: '#/channels/events' }, messages: refs('server_') },
    },
  };
}
