/**
 * The one table of error kinds: each kind's default domain, HTTP status and retryability.
 * Everything that fails in ASM (a route, a run, a lane command) is an AsmError of one of these kinds,
 * so the REST body, the `error` event payload and the CLI all speak the same vocabulary. Each source
 * of failures has one translator beside this file (from-lanes.ts, from-fastify.ts, from-redis.ts,
 * remote-start-failures.ts). This file imports nothing of the app, so every room may use it.
 */

export const ERROR_DOMAINS = [
  'transport',
  'parser',
  'provider',
  'approval',
  'guardrail',
  'tool',
  'runtime',
  'config',
] as const;
export type ErrorDomain = (typeof ERROR_DOMAINS)[number];

interface KindSpec {
  domain: ErrorDomain;
  /** Status when the error answers an HTTP request directly. */
  http: number;
  retryable: boolean;
}

export const ERROR_KINDS = {
  bad_request: { domain: 'config', http: 400, retryable: false },
  config_invalid: { domain: 'config', http: 400, retryable: false },
  payload_too_large: { domain: 'config', http: 413, retryable: false },
  unauthorized: { domain: 'config', http: 401, retryable: false },
  forbidden: { domain: 'config', http: 403, retryable: false },
  not_found: { domain: 'runtime', http: 404, retryable: false },
  conflict: { domain: 'runtime', http: 409, retryable: false },
  at_capacity: { domain: 'runtime', http: 429, retryable: true },
  queue_full: { domain: 'runtime', http: 429, retryable: true },
  rate_limit: { domain: 'provider', http: 429, retryable: true },
  /** A limit of the service (a tenant's quota, a run's output) was reached; details name it. */
  quota_exceeded: { domain: 'runtime', http: 429, retryable: false },
  not_ready: { domain: 'runtime', http: 503, retryable: true },
  shutting_down: { domain: 'runtime', http: 503, retryable: true },
  /** The provider's CLI is not installed where the run would execute: the request asks for what this deployment cannot run (4xx, not a fault of the service). */
  cli_not_found: { domain: 'provider', http: 422, retryable: false },
  connection_failed: { domain: 'transport', http: 502, retryable: true },
  timeout: { domain: 'runtime', http: 504, retryable: true },
  /** The agent printed nothing for the session's idle_timeout_ms (ASM_IDLE_TIMEOUT_MS) and was stopped. */
  idle_timeout: { domain: 'runtime', http: 504, retryable: true },
  parse_error: { domain: 'parser', http: 502, retryable: false },
  auth_error: { domain: 'provider', http: 502, retryable: false },
  buffer_overflow: { domain: 'transport', http: 502, retryable: false },
  transport_error: { domain: 'transport', http: 502, retryable: true },
  provider_error: { domain: 'provider', http: 502, retryable: false },
  user_cancelled: { domain: 'runtime', http: 409, retryable: false },
  approval_denied: { domain: 'approval', http: 409, retryable: false },
  /** A run's agent used a tool outside its allowed_tools; the run was stopped. */
  guardrail_blocked: { domain: 'guardrail', http: 403, retryable: false },
  /** The process executing a run stopped heartbeating (crash, partition); the run's CLI is gone with it. */
  node_lost: { domain: 'runtime', http: 502, retryable: true },
  unknown: { domain: 'runtime', http: 500, retryable: false },
} as const satisfies Record<string, KindSpec>;

export type ErrorKind = keyof typeof ERROR_KINDS;
export const ERROR_KIND_NAMES = Object.keys(ERROR_KINDS) as ErrorKind[];

export interface ErrorBody {
  kind: ErrorKind;
  domain: ErrorDomain;
  message: string;
  retryable: boolean;
  details?: Record<string, unknown>;
}

export class AsmError extends Error {
  readonly kind: ErrorKind;
  readonly domain: ErrorDomain;
  readonly retryable: boolean;
  readonly details?: Record<string, unknown>;

  constructor(
    kind: ErrorKind,
    message: string,
    opts: { domain?: ErrorDomain; retryable?: boolean; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AsmError';
    this.kind = kind;
    this.domain = opts.domain ?? ERROR_KINDS[kind].domain;
    this.retryable = opts.retryable ?? ERROR_KINDS[kind].retryable;
    this.details = opts.details;
  }

  get httpStatus(): number {
    return ERROR_KINDS[this.kind].http;
  }

  toBody(): ErrorBody {
    const body: ErrorBody = { kind: this.kind, domain: this.domain, message: this.message, retryable: this.retryable };
    if (this.details) body.details = this.details;
    return body;
  }

  /** The error an error body describes (a lane command's or another process's answer). */
  static fromBody(body: ErrorBody): AsmError {
    return new AsmError(body.kind, body.message, body);
  }

  static from(err: unknown): AsmError {
    if (err instanceof AsmError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new AsmError('unknown', message, { cause: err });
  }
}

export function isErrorKind(value: string): value is ErrorKind {
  return Object.hasOwn(ERROR_KINDS, value);
}

/** A 400 that names the offending field, as every bad-input answer must. */
export function badField(field: string, message: string): AsmError {
  return new AsmError('bad_request', `${field}: ${message}`, { details: { field } });
}

/** A run stopped by its caller `when` (e.g. "before it started"): it ends interrupted. */
export function cancelledRun(when: string): AsmError {
  return new AsmError('user_cancelled', `Run interrupted ${when}`, { retryable: false });
}
