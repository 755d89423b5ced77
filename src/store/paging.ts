import { badField } from '../errors/kinds.js';

/**
 * Pages of a list: at most `limit` items after an opaque cursor. A cursor names the last item a
 * page ended on (its position key), so items added or removed meanwhile never shift a later page.
 */
export interface PageRequest {
  limit: number;
  /** From the previous page's `next`; absent for the first page. */
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  /** The cursor of the next page; null on the last. */
  next: string | null;
}

/** Where a list of sessions stands: creation time (ms) and id, the order both stores list them in. */
export interface SessionKey {
  at: number;
  id: string;
}

export function encodeCursor(key: object): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

/** The key a cursor names; a cursor this service did not issue is a 400 naming `cursor`. */
export function decodeCursor<K>(cursor: string | undefined, valid: (value: unknown) => value is K): K | undefined {
  if (cursor === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    value = undefined;
  }
  // Named as the routes' other query fields are: a cursor only ever arrives in a list route's query.
  if (!valid(value)) throw badField('query.cursor', 'not a cursor from a previous page of this list');
  return value;
}

export function isSessionKey(value: unknown): value is SessionKey {
  const key = value as SessionKey;
  return typeof key === 'object' && key !== null && Number.isFinite(key.at) && typeof key.id === 'string';
}

/** A position in an append-only list (a session's runs). */
export function isOffset(value: unknown): value is { offset: number } {
  const key = value as { offset: number };
  return typeof key === 'object' && key !== null && Number.isInteger(key.offset) && key.offset >= 0;
}

/** Whether session `a` lists after the key `b`. */
export function sessionAfter(a: SessionKey, b: SessionKey): boolean {
  return a.at > b.at || (a.at === b.at && a.id > b.id);
}

export function sessionKey(session: { created_at: string; id: string }): SessionKey {
  return { at: Date.parse(session.created_at), id: session.id };
}

/** A page of a short list held whole (pending approvals, lanes, nodes, providers, a DLQ): the cursor is a position in it. */
export function pageOf<T>(items: readonly T[], request: PageRequest): Page<T> {
  const start = decodeCursor(request.cursor, isOffset)?.offset ?? 0;
  const end = start + request.limit;
  return { items: items.slice(start, end), next: end < items.length ? encodeCursor({ offset: end }) : null };
}
