import { chmodSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { createSandbox } from '../../src/backends/sandbox.js';
import type { Sandbox } from '../../src/backends/types.js';
import { loadConfig } from '../../src/config.js';

/**
 * The sandbox as tests run it (on by default, as in production): the fake CLIs of test/fixtures
 * read-only, and one scratch folder that every sandboxed CLI may write, for the files tests read back
 * (the fakes' stdin logs). Nothing else of the test's files is visible to a CLI.
 */

export const FIXTURES = fileURLToPath(new URL('../fixtures', import.meta.url));

/** Writable by every account, like /tmp, so a CLI running as ASM_SANDBOX_USER can write there too. */
export const SCRATCH = join(tmpdir(), 'asm-test-scratch');
mkdirSync(SCRATCH, { recursive: true });
chmodSync(SCRATCH, 0o1777);

/** The settings a test server adds to its environment. */
export const SANDBOX_ENV: Record<string, string> = { ASM_SANDBOX_READ_ONLY: FIXTURES, ASM_SANDBOX_WRITABLE: SCRATCH };

/** A fresh folder in the scratch space that a sandboxed CLI can write. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(SCRATCH, prefix));
  chmodSync(dir, 0o777);
  return dir;
}

/** The node's sandbox built from these settings (and any extra), checked as at start-up. */
export function testSandbox(env: Record<string, string> = {}): Promise<Sandbox> {
  return createSandbox(loadConfig({ ...SANDBOX_ENV, ...env }).sandbox, pino({ level: 'silent' }));
}
