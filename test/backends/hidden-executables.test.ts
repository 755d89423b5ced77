/**
 * Host executables a CLI must not find in the real bwrap sandbox (CliCommand.hiddenExecutables, from
 * ProviderProcess.hides): each one of that name on the CLI's PATH is masked at its real path, so a
 * symlink to it finds the mask too; everything else of the host stays as it was.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CliCommand } from '../../src/backends/types.js';
import { scratchDir, testSandbox } from '../helpers/sandbox.js';

const sandbox = await testSandbox();
const SESSION = 'ses_hidden_executables';
afterAll(async () => {
  await sandbox.release(SESSION);
  await sandbox.close();
});

const bin = join(scratchDir('hidden-executables-'), 'bin');
mkdirSync(bin, { mode: 0o755 });
writeFileSync(join(bin, 'own-tool'), '#!/bin/sh\necho own-tool ran\n', { mode: 0o755 });
// A second way to the host's bwrap, ahead of /usr/bin on the PATH.
symlinkSync('/usr/bin/bwrap', join(bin, 'bwrap'));
const PATH = `${bin}:/usr/bin:/bin`;

/** What the sandboxed `sh` finds: each name's lookup on PATH, whether each path is an executable file, and whether the rest works. */
const LOOK = [
  'for name in bwrap own-tool; do command -v "$name" >/dev/null && echo "$name: found" || echo "$name: none"; done',
  `for path in /usr/bin/bwrap ${bin}/bwrap ${bin}/own-tool; do [ -f "$path" ] && [ -x "$path" ] && echo "$path: executable" || echo "$path: not executable"; done`,
  'env --version >/dev/null && echo "env: runs"',
].join('; ');

async function look(hiddenExecutables?: string[]): Promise<string[]> {
  const cli: CliCommand = { command: 'sh', args: ['-c', LOOK], cwd: scratchDir('hidden-executables-work-'), env: { PATH }, stdin: 'closed', hiddenExecutables };
  const wrapped = await sandbox.wrap(SESSION, cli);
  return new Promise((resolve, reject) => {
    const child = spawn(wrapped.command, wrapped.args, { cwd: wrapped.cwd, env: wrapped.env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out.trim().split('\n')) : reject(new Error(`sandboxed sh exited ${code}: ${out}`))));
  });
}

describe('executables hidden from a sandboxed CLI', () => {
  it('shows the host\'s executables to a CLI that hides none', async () => {
    expect(await look()).toEqual([
      'bwrap: found',
      'own-tool: found',
      '/usr/bin/bwrap: executable',
      `${bin}/bwrap: executable`,
      `${bin}/own-tool: executable`,
      'env: runs',
    ]);
  });

  it('masks every one of a hidden name on the PATH, through symlinks too, and nothing else', async () => {
    expect(await look(['bwrap', 'own-tool', 'not-on-path'])).toEqual([
      'bwrap: none',
      'own-tool: none',
      '/usr/bin/bwrap: not executable',
      `${bin}/bwrap: not executable`,
      `${bin}/own-tool: not executable`,
      'env: runs',
    ]);
    expect(await look(['own-tool'])).toEqual([
      'bwrap: found',
      'own-tool: none',
      '/usr/bin/bwrap: executable',
      `${bin}/bwrap: executable`,
      `${bin}/own-tool: not executable`,
      'env: runs',
    ]);
  });
});
