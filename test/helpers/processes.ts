import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SANDBOX_ENV } from './sandbox.js';
import { waitFor } from './wait.js';

/** `asm serve` and `asm worker` as an operator runs them: real OS processes, for tests that kill, restart or run several of them. */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface ServeProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/** `launcher`, here and for workerProcess, runs it through a command that execs it (`ip netns exec NS`), so the child's pid is still node's. */
export function serveProcess(env: Record<string, string>, launcher: string[] = [], entry = SOURCE_ENTRY, logFile?: string): ServeProcess {
  return asmProcess(['serve'], env, launcher, entry, logFile);
}

/** `asm worker …args`; it is taking runs once GET /v1/nodes lists it as ready. */
export function workerProcess(args: string[], env: Record<string, string>, launcher: string[] = []): ServeProcess {
  return asmProcess(['worker', ...args], env, launcher);
}

/** How node starts asm: from the sources through tsx (the tests), or `BUILT_ENTRY`, what `npm start` runs once `npm run build` made it. */
export const SOURCE_ENTRY = ['--import', 'tsx', 'src/cli/main.ts'];
export const BUILT_ENTRY = ['dist/cli/main.js'];

/**
 * With `logFile`, the process writes its output there rather than into a pipe this process reads: a
 * benchmark's load generator then shares its event loop with no reading of the server's log lines
 * (which a bare server does not write).
 */
function asmProcess(args: string[], env: Record<string, string>, launcher: string[] = [], entry = SOURCE_ENTRY, logFile?: string): ServeProcess {
  const command = [...launcher, process.execPath, ...entry, ...args];
  const log = logFile === undefined ? undefined : openSync(logFile, 'a');
  const child = spawn(command[0]!, command.slice(1), {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ASM_LOG_LEVEL: 'info', ...SANDBOX_ENV, ...env },
    stdio: log === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', log, log],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  if (log !== undefined) {
    closeSync(log);
    return { child, output: () => readFileSync(logFile!, 'utf8'), exited };
  }
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  return { child, output: () => output, exited };
}

/** Resolves once `url` answers `path` with a 2xx. */
export async function untilServing(url: string, path = '/healthz', timeoutMs = 15_000): Promise<void> {
  await waitFor(() => fetch(`${url}${path}`).then((r) => r.ok, () => false), `${url} to answer ${path}`, timeoutMs);
}
