import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The git commands this process starts from now on (the service's snapshots and diffs, src/backends/git.ts,
 * which finds git on PATH): a git first on PATH that logs its arguments and runs the real one. Not a
 * mock: every command still runs.
 */
export interface GitLog {
  /** The commands (their arguments, one line each) since the last call. */
  since(): string[];
  /** PATH as it was, the logging git gone. */
  restore(): void;
}

export function logGitCommands(): GitLog {
  const bin = mkdtempSync(join(tmpdir(), 'asm-git-log-'));
  const log = join(bin, 'log');
  writeFileSync(log, '');
  const realGit = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
  writeFileSync(join(bin, 'git'), `#!/bin/sh\necho "$*" >> '${log}'\nexec '${realGit}' "$@"\n`);
  chmodSync(join(bin, 'git'), 0o755);
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path}`;
  let seen = 0;
  return {
    since() {
      const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean);
      const fresh = lines.slice(seen);
      seen = lines.length;
      return fresh;
    },
    restore() {
      process.env.PATH = path;
      rmSync(bin, { recursive: true, force: true });
    },
  };
}
