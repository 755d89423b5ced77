import fc from 'fast-check';

/**
 * fast-check arbitraries driven by JSON Schema (openapi/openapi.json and the TypeBox schemas, which
 * are JSON Schema too): values that fit the schema, and mutations of them that do not. A string
 * property whose name ends in `id` is drawn from `ids` most of the time, so requests reach real,
 * foreign and unknown objects rather than only failing id validation.
 */

export type Schema = Record<string, any>;

export interface Context {
  /** Resolves `$ref`s (`#/components/schemas/X`). */
  root: Schema;
  /** Ids worth trying: this tenant's, another tenant's, ones that do not exist. */
  ids: string[];
}

/** Strings that have broken services before: control characters, NUL, huge, unicode edge cases, injections. */
const NASTY_STRINGS = fc.constantFrom(
  '',
  ' ',
  '\u0000',
  '\u0000abc',
  '../../etc/passwd',
  '/',
  '%00',
  '%2e%2e%2f',
  '\ud800',
  '💥'.repeat(50),
  "' OR 1=1 --",
  '${process.exit(1)}',
  '{{constructor.constructor("return process")()}}',
  '__proto__',
  'constructor',
  'x'.repeat(70_000),
  '-1',
  'NaN',
  '1e309',
  'null',
  '[]',
);

const anyJson = fc.jsonValue({ maxDepth: 3 });

function resolve(schema: Schema, ctx: Context): Schema {
  if (typeof schema.$ref !== 'string') return schema;
  const path = schema.$ref.replace(/^#\//, '').split('/');
  return resolve(path.reduce((node: any, key) => node?.[key], ctx.root) ?? {}, ctx);
}

/** A value that satisfies the schema (as far as this generator reads it). */
export function valid(schema: Schema, ctx: Context, name = ''): fc.Arbitrary<unknown> {
  const s = resolve(schema, ctx);
  if (s.const !== undefined) return fc.constant(s.const);
  if (Array.isArray(s.enum)) return fc.constantFrom(...s.enum);
  const union = s.anyOf ?? s.oneOf;
  if (Array.isArray(union)) return fc.oneof(...union.map((option: Schema) => valid(option, ctx, name)));
  switch (s.type) {
    case 'object':
      return objectOf(s, ctx);
    case 'array':
      return fc.array(valid(s.items ?? {}, ctx, name), { minLength: s.minItems ?? 0, maxLength: Math.min(s.maxItems ?? 4, 4) });
    case 'integer':
      return fc.integer({ min: s.minimum ?? -1_000, max: Math.min(s.maximum ?? 1_000_000, 2 ** 31 - 1) });
    case 'number':
      return fc.double({ min: s.minimum ?? -1e6, max: s.maximum ?? 1e6, noNaN: true });
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'string':
      return stringOf(s, ctx, name);
    default:
      return anyJson;
  }
}

/** Names the service knows, so that valid requests get past name lookups and reach the real work. */
const KNOWN_NAMES: Record<string, string[]> = {
  provider: ['claude', 'claude', 'shell', 'codex', 'gemini', 'amp'],
  name: ['claude', 'shell', 'codex', 'gemini', 'amp'],
  lane: ['prompt', 'skill', 'session', 'control', 'system'],
  queue: ['prompt', 'skill'],
};

function stringOf(s: Schema, ctx: Context, name: string): fc.Arbitrary<string> {
  const known = KNOWN_NAMES[name];
  if (known) return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...known) }, { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 40 }) });
  if (/(^|_)id$/.test(name) && ctx.ids.length) return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...ctx.ids) }, { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 40 }) });
  const minLength = s.minLength ?? 0;
  const maxLength = Math.min(s.maxLength ?? 64, 64);
  if (s.pattern) return fc.stringMatching(new RegExp(s.pattern)).filter((v) => v.length >= minLength && v.length <= (s.maxLength ?? Infinity));
  return fc.string({ minLength, maxLength: Math.max(minLength, maxLength), unit: 'grapheme' });
}

function objectOf(s: Schema, ctx: Context): fc.Arbitrary<Record<string, unknown>> {
  const properties: Record<string, Schema> = s.properties ?? {};
  const required: string[] = s.required ?? [];
  const record: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [key, sub] of Object.entries(properties)) record[key] = valid(sub, ctx, key);
  if (Object.keys(record).length === 0) return fc.dictionary(fc.string({ maxLength: 8 }), anyJson, { maxKeys: 3 });
  return fc.record(record, { requiredKeys: required.filter((k) => k in record) }) as fc.Arbitrary<Record<string, unknown>>;
}

/** The schema's required fields only, valid: the request most likely to be accepted and do real work. */
function minimal(schema: Schema, ctx: Context): fc.Arbitrary<unknown> {
  const s = resolve(schema, ctx);
  if (s.type !== 'object' || !s.properties) return valid(s, ctx);
  const required: string[] = (s.required ?? []).filter((key: string) => key in s.properties);
  return fc.record(Object.fromEntries(required.map((key) => [key, valid(s.properties[key], ctx, key)])));
}

/**
 * A value of the schema (or only its required fields), then mutated with some probability: a required field dropped, an unknown one
 * added, a field of the wrong type or a nasty string, the whole body replaced by arbitrary JSON.
 */
export function mutated(schema: Schema, ctx: Context): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 3, arbitrary: minimal(schema, ctx) },
    { weight: 3, arbitrary: valid(schema, ctx) },
    { weight: 3, arbitrary: fc.tuple(valid(schema, ctx), fc.nat(), anyJson, NASTY_STRINGS, fc.nat({ max: 4 })).map(([value, pick, junk, nasty, how]) => mutate(value, pick, junk, nasty, how)) },
    { weight: 1, arbitrary: anyJson },
    { weight: 1, arbitrary: NASTY_STRINGS },
  );
}

function mutate(value: unknown, pick: number, junk: unknown, nasty: string, how: number): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return how % 2 ? junk : nasty;
  const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  const keys = Object.keys(copy);
  const key = keys.length ? keys[pick % keys.length] : 'field';
  switch (how) {
    case 0:
      delete copy[key];
      break;
    case 1:
      copy[`unknown_${pick % 7}`] = junk;
      break;
    case 2:
      copy[key] = junk;
      break;
    case 3:
      copy[key] = nasty;
      break;
    default:
      copy.__proto__ = junk as object;
      copy[key] = [copy[key], copy[key]];
  }
  return copy;
}

/** A string for a path or query parameter: an id of the pool, a value of its schema, or a nasty string. */
export function parameter(schema: Schema, ctx: Context, name: string): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: valid(schema, ctx, name).map((v) => String(v)) },
    { weight: 1, arbitrary: NASTY_STRINGS.map((v) => v.slice(0, 2_000)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
  );
}
