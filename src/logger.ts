import pino, { type DestinationStream, type Logger } from 'pino';
import { stdoutLines } from './log-destination.js';

/**
 * The service's logger: JSON lines in which no secret appears. A request's URL may carry an API key
 * (`?token=`, for clients that cannot set headers), so every `token=` value is replaced in each line
 * written, whichever field or message holds the URL; the Authorization header is never logged (the
 * request serializer leaves headers out, and `redact` covers headers logged any other way); a
 * session's MCP servers, whose `env` and `headers` hold secrets, are never logged either (nothing logs
 * them, and `redactSecrets` covers a session record or request body logged whole); and a Redis error
 * keeps the name of its failed command but not its arguments.
 *
 * Lines go to standard output asynchronously, a turn of the event loop's at once
 * (src/log-destination.ts), so a request does not wait on a write; what is held or buffered is
 * written when the process exits, process.exit() included. A `destination` given instead (a test's)
 * gets each line as it is made.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      serializers: { err: errorWithoutCommandArgs },
      formatters: { log: redactSecrets },
    },
    destination ? { write: (line: string) => destination.write(redactTokens(line)) } : stdoutLines(redactTokens),
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

/** `text` (a line, or a turn's lines) with the value of every `token=` parameter replaced by `[redacted]`. */
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

/**
 * The fields that name a run on the lines written about it: its id, and the id of the request that
 * created it where a request did (README "Request ids"). Passed explicitly rather than kept in an
 * AsyncLocalStorage: on Node 20 that turns on a promise hook for every promise of the process, which
 * cost a submit 17% of its throughput (bench/RESULTS.md, issue 14, ninth pass).
 */
export function runLogFields(run: { id: string; observability: { request_id?: string } }): { runId: string; reqId?: string } {
  const requestId = run.observability.request_id;
  return requestId === undefined ? { runId: run.id } : { runId: run.id, reqId: requestId };
}
