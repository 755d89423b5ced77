import { AsmError } from '../errors/kinds.js';
import { spawnChild } from './spawn-child.js';

export interface GitOptions {
  /** Variables on top of the clean environment (GIT_DIR, GIT_WORK_TREE, …). */
  env?: Record<string, string>;
  cwd: string;
  /** HOME of the command: a folder of the service's, so no user's configuration is read. */
  home: string;
  /** A command that takes longer is stopped (ASM_GIT_TIMEOUT_MS). */
  timeoutMs: number;
  /** Exit codes that count as success; [0] by default. */
  okCodes?: number[];
  /** More stdout than this stops the command, which then resolves null. */
  maxBytes?: number;
}

/**
 * One git command of the service's own (a workspace's shadow repository, a clone): its stdout. No
 * configuration of the host or of any user applies (GIT_CONFIG_NOSYSTEM, GIT_CONFIG_GLOBAL=/dev/null),
 * hooks are off, and git never prompts. Rejects with an AsmError that names the command.
 */
export function runGit(args: string[], opts: GitOptions & { maxBytes: number }): Promise<string | null>;
export function runGit(args: string[], opts: GitOptions): Promise<string>;
export function runGit(args: string[], opts: GitOptions): Promise<string | null> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: opts.home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    ...opts.env,
  };
  const config = ['-c', 'core.autocrlf=false', '-c', 'core.quotepath=false', '-c', 'core.fsmonitor=false', '-c', 'core.hooksPath=/dev/null', '-c', 'gc.auto=0'];
  return new Promise((resolve, reject) => {
    const child = spawnChild('git', [...config, ...args], { env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let size = 0;
    let over = false;
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.stdout?.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (opts.maxBytes !== undefined && size > opts.maxBytes) {
        over = true;
        out.length = 0;
        child.kill('SIGKILL');
        return;
      }
      out.push(chunk);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString('utf8');
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new AsmError('unknown', `git could not start: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (over) return resolve(null);
      if (signal) return reject(new AsmError('timeout', `git ${args[0]} took longer than ${opts.timeoutMs} ms (ASM_GIT_TIMEOUT_MS)`));
      if (!(opts.okCodes ?? [0]).includes(code ?? -1)) return reject(new AsmError('unknown', `git ${args[0]} failed (${code}): ${stderr.trim().slice(0, 500)}`));
      resolve(Buffer.concat(out).toString('utf8'));
    });
  });
}
