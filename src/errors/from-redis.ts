import { ReplyError } from 'ioredis';
import { AsmError } from './kinds.js';

/** Replies that mean Redis is there but cannot serve now (loading, failing over, out of memory). */
const NOT_READY_REPLY = /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|OOM) /;
/** A login or ACL refusal; the last is how Redis refuses a command a script runs for a user without it. */
const ACCESS_REPLY = /^(NOPERM|NOAUTH|WRONGPASS) |^ERR The user executing the script can't run this command/;

/** A login or ACL refusal: retrying cannot help. */
export function isAccessRefusal(err: unknown): boolean {
  return err instanceof ReplyError && ACCESS_REPLY.test((err as Error).message);
}

/**
 * A Redis failure on a request's path as AsmError `not_ready` (HTTP 503): unreachable (with the
 * connection's last error when known), refusing access, or unable to serve now. Other replies are
 * bugs and pass through unchanged, as do errors that already have a kind.
 */
export function fromRedisError(err: unknown, lastConnectionError?: string): unknown {
  if (err instanceof AsmError) return err;
  if (err instanceof ReplyError) {
    const message = (err as Error).message;
    if (ACCESS_REPLY.test(message)) return new AsmError('not_ready', `Redis refused access: ${message}; check the ACL user's permissions`, { cause: err });
    if (NOT_READY_REPLY.test(message)) return new AsmError('not_ready', `Redis cannot serve: ${message}`, { cause: err });
    return err;
  }
  const detail = lastConnectionError ?? (err instanceof Error ? err.message : String(err));
  return new AsmError('not_ready', `Redis is unreachable: ${detail}`, { cause: err });
}
