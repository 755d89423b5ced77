import { AsyncLocalStorage } from 'node:async_hooks';
import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * The service's logger: JSON lines in which no secret appears. A request's URL may carry an API key
 * (`?token=`, for clients that cannot set headers), so every `token=` value is replaced in each line
 * written, whichever field or message holds the URL; the Authorization header is never logged (the
 * request serializer leaves headers out, and `redact` covers headers logged any other way); a
 * session's MCP servers, whose `env` and `headers` hold secrets, are never logged either (nothing logs
 * them, and `redactSecrets` covers a session record or request body logged whole); and a Redis error
 * keeps the name of its failed command but not its arguments.
 *
 * Lines are written asynchronously (sonic-boom buffers them and writes when the event loop is free),
 * so a request does not wait on a write to stdout; pino flushes what is buffered when the process
 * exits, process.exit() included.
 */
export function createLogger(level: string, destination: DestinationStream = pino.destination({ dest: 1, sync: false })): Logger {
  return pino(
    {
      level,
      mixin: logContextFields,
      mixinMergeStrategy: withContext,
      serializers: { err: errorWithoutCommandArgs },
      formatters: { log: redactSecrets },
    },
    { write: (line: string) => destination.write(redactTokens(line)) },
  );
}

const CENSOR = '[redacted]';

/**
 * The line's fields with every secret a careless line could carry replaced by CENSOR, at the top or
 * one level down: `authorization` (top only), `headers.authorization`, `headers.cookie`, `mcp_servers`
 * and `mcp_server_config`. The fields are copied where something is replaced, never changed. This is
 * what pino's `redact` paths (`*.headers.authorization` …) did, by hand because its wildcards cost
 * 3.3 µs a line against 0.56 without (bench -- logger), and a request writes one or two lines.
 */
function redactSecrets(fields: Record<string, unknown>): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const key in fields) {
    const value = fields[key];
    const redacted = key === 'authorization' ? CENSOR : redactField(key, value, true);
    if (redacted !== value) (copy ??= { ...fields })[key] = redacted;
  }
  return copy ?? fields;
}

/** `value` under `key` with its secrets censored; `nest`: a plain record's own fields are searched as well. */
function redactField(key: string, value: unknown, nest: boolean): unknown {
  if (key === 'mcp_servers' || key === 'mcp_server_config') return CENSOR;
  if (!isPlainRecord(value)) return value;
  if (key === 'headers') return 'authorization' in value || 'cookie' in value ? { ...value, ...('authorization' in value && { authorization: CENSOR }), ...('cookie' in value && { cookie: CENSOR }) } : value;
  if (!nest) return value;
  let copy: Record<string, unknown> | undefined;
  for (const inner in value) {
    const redacted = redactField(inner, value[inner], false);
    if (redacted !== value[inner]) (copy ??= { ...value })[inner] = redacted;
  }
  return copy ?? value;
}

/** A record of plain data (`{}`, or without prototype as Node's headers are), not an instance of a class. */
function isPlainRecord(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** A `token=` parameter (also `access_token=` and the like) up to the end of its value. */
const TOKEN_PARAMETER = /(token=)[^&#\s"'\\]*/gi;

/** `text` with the value of every `token=` parameter replaced by `[redacted]`. */
function redactTokens(text: string): string {
  return text.replace(TOKEN_PARAMETER, '$1[redacted]');
}

function errorWithoutCommandArgs(err: unknown): unknown {
  return withoutCommandArgs(pino.stdSerializers.err(err as Error), 0);
}

/** How deep a serialised error is searched for commands (errors nested in errors, `aggregateErrors`). */
const MAX_DEPTH = 5;

/**
 * ioredis errors carry the failed command as `{name, args}`, and the arguments are data: an AUTH's
 * password, a write's values. A copy of the serialised error with each such command reduced to its name.
 */
function withoutCommandArgs(value: unknown, depth: number): unknown {
  if (depth > MAX_DEPTH) return value;
  if (Array.isArray(value)) return value.map((item) => withoutCommandArgs(item, depth + 1));
  // Plain records only (serialised errors are plain too): a Buffer or a Date is no place for a command.
  if (typeof value !== 'object' || value === null || (value.constructor !== Object && value.constructor !== undefined)) return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, item]) => [key, key === 'command' && isCommand(item) ? { name: item.name } : withoutCommandArgs(item, depth + 1)]),
  );
}

function isCommand(value: unknown): value is { name: unknown; args: unknown } {
  return typeof value === 'object' && value !== null && 'name' in value && 'args' in value;
}

/** The fields of the work in progress (the request, the run) that every log line written for it carries. */
interface LogContext {
  /** The request's id (x-request-id), under the name Fastify's own request lines give it. */
  reqId?: string;
  run_id?: string;
}

const logContext = new AsyncLocalStorage<LogContext>();

/**
 * Runs `fn` (and everything it starts) with `fields` on each log line it writes, so a line the
 * service layers write while serving a request or executing a run names that request and run
 * without each layer being handed a child logger.
 */
export function withLogContext<T>(fields: LogContext, fn: () => T): T {
  return logContext.run(fields, fn);
}

/**
 * The line's fields after the context's, in a new object (pino's default assigns the line's fields
 * into the mixin's object, which is the shared context). Built field by field: an object spread of the
 * two was most of a line's cost on Node 20 here: 5.25 µs a line with it, 1.27 without (bench -- logger).
 */
function withContext(fields: object, context: LogContext): object {
  if (context === NO_CONTEXT) return fields;
  const merged: Record<string, unknown> = {};
  if (context.reqId !== undefined) merged.reqId = context.reqId;
  if (context.run_id !== undefined) merged.run_id = context.run_id;
  return Object.assign(merged, fields);
}

/** What the mixin returns for a line with no context to add: the line's own fields are kept as they are. */
const NO_CONTEXT: LogContext = Object.freeze({});

/**
 * pino's mixin: the context's fields, except on a child logger that is already bound to a request
 * (Fastify's). The child's bindings are read as pino keeps them, a JSON fragment, because parsing them
 * (`logger.bindings()`) on every line was the largest part of a request's logging.
 */
function logContextFields(_merge: object, _level: number, logger: Logger): LogContext {
  const fields = logContext.getStore();
  if (!fields) return NO_CONTEXT;
  return (logger as unknown as Record<symbol, string | undefined>)[pino.symbols.chindingsSym]?.includes('"reqId":') ? NO_CONTEXT : fields;
}
