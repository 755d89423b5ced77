import { ReplyError } from 'ioredis';
import { AsmError } from './kinds.js';

/** Replies that mean Redis is there but cannot serve now (loading, failing over, out of memory). */
const NOT_READY_REPLY = /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|OOM) /;
/** A login or ACL refusal; the last is how Redis refuses a command a script runs for a user without it. */
const ACCESS_REPLY = /^(NOPERM|NOAUTH|WRONGPASS) |^ERR The user executing the script can't run this command/;

/**
 * Node's codes for a server certificate its TLS check rejected: the X509 verification errors of
 * OpenSSL that concern the certificate or its chain, and a certificate that does not name the host.
 */
const CERTIFICATE_REJECTIONS = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE', 'CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'CERT_CHAIN_TOO_LONG', 'CERT_REVOKED',
  'INVALID_CA', 'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** A failure that retrying cannot mend: a login or ACL refusal, or a server certificate this client does not trust. */
export function isPermanentRefusal(err: unknown): boolean {
  return (err instanceof ReplyError && ACCESS_REPLY.test((err as Error).message)) || isCertificateRejection(err);
}

function isCertificateRejection(err: unknown): err is Error & { code: string } {
  return err instanceof Error && CERTIFICATE_REJECTIONS.has((err as { code?: unknown }).code as string);
}

/**
 * A Redis failure on a request's path as AsmError `not_ready` (HTTP 503): unreachable (with the
 * connection's last error when known), its certificate not trusted, refusing access, or unable to
 * serve now. Other replies are bugs and pass through unchanged, as do errors that already have a kind.
 */
export function fromRedisError(err: unknown, lastConnectionError?: string): unknown {
  if (err instanceof AsmError) return err;
  if (isCertificateRejection(err)) {
    return new AsmError('not_ready', `Redis's TLS certificate is not trusted: ${err.message} (${err.code}); ASM_REDIS_TLS_CA names the CA that signed it, and the certificate must name the host of REDIS_URL`, { cause: err });
  }
  if (err instanceof ReplyError) {
    const message = (err as Error).message;
    if (ACCESS_REPLY.test(message)) return new AsmError('not_ready', `Redis refused access: ${message}; check the ACL user's permissions`, { cause: err });
    if (NOT_READY_REPLY.test(message)) return new AsmError('not_ready', `Redis cannot serve: ${message}`, { cause: err });
    return err;
  }
  const detail = lastConnectionError ?? (err instanceof Error ? err.message : String(err));
  return new AsmError('not_ready', `Redis is unreachable: ${detail}`, { cause: err });
}
