/**
 * The response serializers (src/http/serializers.ts): compiled from the declared schemas rewritten so
 * that fast-json-stringify writes nullable fields and literal unions without validating them, they
 * write what serializers compiled from the declared schemas write, and fields outside the schema
 * (a record's internal ones) stay out; one serializer is built per distinct schema, however many
 * routes answer it.
 */
import build from 'fast-json-stringify';
import { describe, expect, it } from 'vitest';
import { forSerialization, serializerCompiler } from '../../src/http/serializers.js';
import { SHARED_SCHEMAS } from '../../src/schemas/api.js';

type Serializer = (data: unknown) => string;
const declared = Object.fromEntries(SHARED_SCHEMAS.map((schema) => [schema.$id!, schema]));
const rewritten = Object.fromEntries(SHARED_SCHEMAS.map((schema) => [schema.$id!, forSerialization(schema)]));
const compile = (id: string, schemas: Record<string, unknown>): Serializer => build(forSerialization({ $ref: id }) as never, { schema: schemas as never }) as Serializer;
const asDeclared = (id: string): Serializer => build({ $ref: id } as never, { schema: declared as never }) as Serializer;

const at = '2026-12-03T19:00:00.000Z';
const laneMetadata = {
  requested_lane: 'auto', preferred_lane: 'core', lane: 'core', backend: 'core', execution_mode: 'local', lane_reason: 'sdk_unavailable', lane_fallback_reason: null,
  sdk_runtime: null, sdk_available: false, capabilities: ['interrupt'], missing_capabilities: [], node: 'node-a', queue: 'skill',
};
const run = { id: 'run_1', session_id: 'ses_1', provider: 'shell', queue: 'skill', prompt: 'true', metadata: { team: 'a' }, created_at: at, owner: 'internal', dispatched: true };
const runs = [
  { ...run, state: 'queued', started_at: null, finished_at: null, result: null },
  {
    ...run, state: 'completed', started_at: at, finished_at: at,
    result: { status: 'completed', text: 'done', stop_reason: null, usage: null, cost_usd: null, error: null, duration_ms: 5, provider_session_id: null, metadata: laneMetadata },
  },
  {
    ...run, state: 'failed', started_at: null, finished_at: at,
    result: {
      status: 'failed', text: '', stop_reason: 'error', usage: { input_tokens: 1, output_tokens: 2, total_tokens: 3 }, cost_usd: 0.5,
      error: { kind: 'node_lost', domain: 'runtime', message: 'lost', retryable: true, details: { node: 'node-a' } }, duration_ms: null, provider_session_id: 'p-1', metadata: null,
    },
  },
];

describe('response serializers', () => {
  it('write a run as the declared schema does, in each of its shapes, without its internal fields', () => {
    const fast = compile('Run', rewritten);
    const reference = asDeclared('Run');
    for (const sample of runs) {
      expect(fast(sample)).toBe(reference(sample));
      expect(JSON.parse(fast(sample))).not.toHaveProperty('owner');
    }
    expect(JSON.parse(fast(runs[0]))).toMatchObject({ state: 'queued', started_at: null, result: null });
    expect(JSON.parse(fast(runs[2])).result).toMatchObject({ error: { kind: 'node_lost' }, metadata: null, duration_ms: null });
  });

  it('leave no anyOf in a run or a session: nothing is validated while writing them', () => {
    for (const id of ['Run', 'RunResult']) expect(JSON.stringify(rewritten[id])).not.toContain('anyOf');
    // A session's MCP servers are a real union (a stdio server or an http one): the one kept.
    const { mcp_servers: _union, ...sessionFields } = (rewritten.Session as { properties: Record<string, unknown> }).properties;
    expect(JSON.stringify(sessionFields)).not.toContain('anyOf');
    expect(forSerialization({ anyOf: [{ type: 'string', const: 'a' }, { type: 'string', const: 'b' }, { type: 'null' }] })).toEqual({ type: 'string', enum: ['a', 'b'], nullable: true });
    expect(forSerialization({ description: 'd', anyOf: [{ $ref: 'RunResult' }, { type: 'null' }] })).toEqual({ description: 'd', $ref: 'RunResult', nullable: true });
  });

  it('keep a union of different types as declared', () => {
    const union = { anyOf: [{ type: 'string' }, { type: 'integer' }] };
    expect(forSerialization(union)).toEqual(union);
    const write = build(forSerialization({ type: 'object', properties: { value: union } }) as never) as Serializer;
    expect(write({ value: 3 })).toBe('{"value":3}');
    expect(write({ value: 'x' })).toBe('{"value":"x"}');
  });

  it('build one serializer per distinct schema, shared by every route that answers it, and read the shared schemas once', () => {
    let reads = 0;
    const compileRoute = serializerCompiler(() => (reads++, declared));
    // Equal schemas in different objects, as two routes declare them: one serializer.
    const errorOfOne = compileRoute({ schema: { $ref: 'Error' } });
    const errorOfAnother = compileRoute({ schema: { $ref: 'Error' } });
    expect(errorOfAnother).toBe(errorOfOne);
    const runSerializer = compileRoute({ schema: { $ref: 'Run' } });
    expect(runSerializer).not.toBe(errorOfOne);
    expect(reads).toBe(1);
    // Shared, it still writes each value it is given, and the rewritten form (no anyOf left to validate).
    const error = { error: { kind: 'not_found', domain: 'runtime', message: 'no such run', retryable: false } };
    expect(errorOfAnother(error)).toBe(asDeclared('Error')(error));
    expect(runSerializer(runs[1])).toBe(asDeclared('Run')(runs[1]));
  });
});
