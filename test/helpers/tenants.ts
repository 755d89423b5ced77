import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Tenants files (ASM_TENANTS_FILE) for tests, written as an operator would: each key given only as
 * its SHA-256 digest, computed here independently of the service's own hashing.
 */

export function sha256(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** One tenant entry: its id, its key (stored as the digest) and any other fields of the file. */
export function tenant(id: string, key: string, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return { id, key_sha256: [sha256(key)], ...fields };
}

/** Writes the document (a list of tenants, or {defaults, tenants}) to a fresh file and returns its path. */
export function tenantsFile(doc: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'asm-tenants-')), 'tenants.json');
  writeFileSync(file, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return file;
}
