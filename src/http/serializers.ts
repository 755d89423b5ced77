import build from 'fast-json-stringify';
import type { FastifyInstance } from 'fastify';

type Schema = Record<string, unknown>;

/**
 * Response serializers compiled from the routes' schemas, as Fastify's own are, from a form of them
 * that fast-json-stringify writes without validating the data first. For each `anyOf` it checks the
 * value against every branch with Ajv before writing it, and TypeBox writes a nullable field
 * (`Nullable`, schemas/api.ts) and a union of literals (a state, an error kind) as `anyOf`: a run's
 * answer validated its whole result that way, 0.24 ms of server time per `wait: true` run, 0.076 ms
 * now (bench/RESULTS.md issue 14, fourth pass). Here `anyOf [X, null]` becomes X with `nullable: true`, and a union of
 * string literals a string `enum`; what is written is the same. Request validation and the OpenAPI
 * document keep the schemas as declared.
 */
export function compileSerializersFromSchemas(fastify: FastifyInstance): void {
  fastify.setSerializerCompiler(serializerCompiler(() => fastify.getSchemas()));
}

type Serializer = ReturnType<typeof build>;
type FjsSchema = Parameters<typeof build>[0];

/**
 * The compiler of compileSerializersFromSchemas, over the shared schemas `shared` returns (read and
 * rewritten once, when the first route is compiled). It builds one serializer per distinct schema and
 * hands it to every route and status that answers that schema: each build validates every shared
 * schema again, and 372 of the service's 427 (route, status) pairs answer the same `{ $ref: Error }`,
 * so building each pair took 420 ms of every start (bench/RESULTS.md, issue 14, thirtieth pass); 23
 * builds now, each given only the shared schemas it refers to. A serializer keeps no state between
 * calls, so sharing one is safe.
 */
export function serializerCompiler(shared: () => Record<string, unknown>): (route: { schema: unknown }) => Serializer {
  let external: Record<string, FjsSchema> | undefined;
  const built = new Map<string, Serializer>();
  return ({ schema }) => {
    external ??= Object.fromEntries(Object.entries(shared()).map(([id, schema]) => [id, forSerialization(schema) as FjsSchema]));
    const key = JSON.stringify(schema);
    let serializer = built.get(key);
    if (!serializer) built.set(key, (serializer = build(forSerialization(schema) as FjsSchema, { schema: referencedBy(schema, external) })));
    return serializer;
  };
}

/** The schemas of `shared` that `schema` refers to (`$ref: "Id"` or `"Id#/…"`), directly or through one another. */
function referencedBy(schema: unknown, shared: Record<string, FjsSchema>): Record<string, FjsSchema> {
  const found: Record<string, FjsSchema> = {};
  const pending = [schema];
  while (pending.length > 0) {
    const value = pending.pop();
    if (value === null || typeof value !== 'object') continue;
    const ref = (value as Schema).$ref;
    const id = typeof ref === 'string' ? ref.split('#')[0]! : '';
    if (id in shared && !(id in found)) pending.push((found[id] = shared[id]!));
    pending.push(...Object.values(value));
  }
  return found;
}

/** The schema with its nullable fields and unions of string literals in the forms fast-json-stringify writes directly. */
export function forSerialization(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(forSerialization);
  if (schema === null || typeof schema !== 'object') return schema;
  const copy: Schema = {};
  for (const [key, value] of Object.entries(schema)) copy[key] = forSerialization(value);
  const options = copy.anyOf;
  if (!Array.isArray(options)) return copy;
  const { anyOf: _replaced, ...siblings } = copy;
  const present = (options as Schema[]).filter((option) => option.type !== 'null');
  const nullable = present.length < options.length;
  if (present.length === 1) return { ...siblings, ...present[0], ...(nullable && { nullable: true }) };
  if (present.length > 0 && present.every((option) => option.type === 'string' && typeof option.const === 'string')) {
    return { ...siblings, type: 'string', enum: present.map((option) => option.const), ...(nullable && { nullable: true }) };
  }
  return copy;
}
