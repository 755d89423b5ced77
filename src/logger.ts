import { AsyncLocalStorage } from 'node:async_hooks';
import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * The service's logger: JSON lines in which no secret appears. A request's URL may carry an API key
 * (`?token=`, for clients that cannot set headers), so every `token=` value is replaced in each line
 * written, whichever field or message holds the URL; the Authorization header is never logged (the
 * request serializer leaves headers out, and `redact` covers headers logged any other way); a
 * session's MCP servers, whose `env` and `headers` hold secrets, are never logged either (nothing logs
 * them, and `redact` covers a session record or request body logged whole); and a Redis error keeps
 * the name of its failed command but not its arguments.
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
      serializers: { err: errorWithoutCommandArgs },
      redact: {
        paths: [
          'authorization', 'headers.authorization', '*.headers.authorization', 'headers.cookie', '*.headers.cookie',
          'mcp_servers', '*.mcp_servers', 'mcp_server_config', '*.mcp_server_config',
        ],
        censor: '[redacted]',
      },
    },
    { write: (line: string) => destination.write(redactTokens(line)) },
  );
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

/** pino's mixin: the context's fields, except on a child logger that is already bound to a request (Fastify's). */
function logContextFields(_merge: object, _level: number, logger: Logger): LogContext {
  const fields = logContext.getStore();
  if (!fields) return {};
  return 'reqId' in logger.bindings() ? {} : fields;
}
