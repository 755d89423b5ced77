import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck, type ValueError } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import type { FastifySchemaCompiler } from 'fastify';
import { badField } from '../errors/kinds.js';
import { SHARED_SCHEMAS } from '../schemas/api.js';

/**
 * Route validation with TypeBox's compiler, so the TypeBox schemas are the one source of validation.
 * Bodies are checked as sent (a string is never coerced into a number); query strings and path
 * parameters are converted first, since they arrive as text. The first error names its field.
 */
export const typeboxValidatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = compiledCheckOf(schema);
  const convert = httpPart !== 'body';
  return (data: unknown) => {
    if (!convert) {
      const tooDeep = fieldNestedTooDeep(data);
      if (tooDeep !== undefined) return { error: badField(tooDeep, `nested deeper than ${MAX_BODY_DEPTH} levels`) };
    }
    const value = convert ? Value.Convert(schema, SHARED_SCHEMAS, data) : data;
    if (check.Check(value)) return { value };
    const first = check.Errors(value).First()!;
    return { error: badField(fieldName(httpPart ?? 'body', first), describe(first)) };
  };
};

const compiledChecks = new WeakMap<TSchema, TypeCheck<TSchema>>();

/**
 * The compiled check of `schema`, compiled once per schema object: the routes share their path and
 * paging schemas, so compiling each route's parts was 60 compilations at every start, now 16
 * (bench/RESULTS.md, issue 14, thirtieth pass). Keyed by the object, not its JSON, which leaves out
 * TypeBox's own (symbol) keys.
 */
export function compiledCheckOf(schema: TSchema): TypeCheck<TSchema> {
  let check = compiledChecks.get(schema);
  if (!check) compiledChecks.set(schema, (check = TypeCompiler.Compile(schema, SHARED_SCHEMAS)));
  return check;
}

/**
 * Free-form fields (metadata, driver_opts) take any JSON, but a value nested thousands of levels deep
 * would be stored and then overflow the stack of every response that serialises it. Checked without
 * recursion, before the schema; answers the top-level field that holds the deep value.
 */
const MAX_BODY_DEPTH = 64;

function fieldNestedTooDeep(data: unknown): string | undefined {
  const stack: Array<{ value: unknown; depth: number; field: string }> = [{ value: data, depth: 0, field: 'body' }];
  while (stack.length > 0) {
    const { value, depth, field } = stack.pop()!;
    if (typeof value !== 'object' || value === null) continue;
    if (depth >= MAX_BODY_DEPTH) return field;
    for (const [key, child] of Object.entries(value)) stack.push({ value: child, depth: depth + 1, field: depth === 0 ? key : field });
  }
  return undefined;
}

function fieldName(part: string, error: ValueError): string {
  const path = error.path.replace(/^\//, '').replace(/\//g, '.');
  if (part === 'body') return path || 'body';
  return path ? `${part === 'querystring' ? 'query' : part}.${path}` : part;
}

export function describe(error: ValueError): string {
  const options = (error.schema as { anyOf?: Array<{ const?: unknown }> }).anyOf;
  if (options && options.every((o) => o.const !== undefined)) {
    return `must be one of ${options.map((o) => JSON.stringify(o.const)).join(', ')}`;
  }
  if (error.message === 'Unexpected property') return 'unknown field';
  return error.message.charAt(0).toLowerCase() + error.message.slice(1);
}
