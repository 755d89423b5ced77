import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { AsmError, badField } from '../errors/kinds.js';
import type { ExecutionSurface } from '../schemas/api.js';
import type { ProcessExit } from '../providers/types.js';
import { isInside } from './workspace.js';
import type { CliCommand, Sandbox, SandboxedCommand } from './types.js';

/**
 * An execution surface (ExecutionSurface in src/schemas/api.ts) says where the node places the CLI
 * process. The subprocess runner asks the surface what to spawn locally; the process it gets is then
 * handled the same way whatever the surface: its group, its stdin as the control channel, its stdout
 * lines, its stop escalation.
 *
 * - local_subprocess: the CLI itself, in the node's sandbox (sandbox.ts).
 * - ssh: an `ssh` client that starts the CLI on the host. ssh forwards stdin, stdout and stderr, so
 *   the provider's control protocol (claude's control_request interrupt, approvals) works unchanged.
 *   What ssh does not carry is signals or the end of the local process: when the ssh client is
 *   stopped, the remote command only sees its stdin end. So the CLI runs under a small sh wrapper
 *   (remoteScript) that treats the end of stdin as "the node is done or gone" and stops the CLI's
 *   process group the way the local runner would (grace, SIGTERM, SIGKILL), so nothing outlives the run.
 *   The node's sandbox is not around it: the local process is only the ssh client (which must read
 *   the key files), and the CLI runs on the host as the remote account, which is its boundary there.
 *
 * Another surface is one more case of `surfaceLaunch`.
 */

export const LOCAL_SURFACE: ExecutionSurface = { kind: 'local_subprocess' };

/** Graces of the remote stop escalation, the same ones the local runner uses. */
export interface SurfaceLimits {
  exitGraceMs: number;
  killGraceMs: number;
}

/** What to spawn locally, and how to read its exit. */
export interface SurfaceLaunch extends SandboxedCommand {
  /** An exit that is the surface's own failure rather than the CLI's (ssh could not connect); null otherwise. */
  failure(exit: ProcessExit, sawOutput: boolean): AsmError | null;
}

/** Where a local CLI runs: the node's sandbox, and the session it keeps a HOME for. */
export interface LocalPlacement {
  sandbox: Sandbox;
  sessionId: string;
}

export async function surfaceLaunch(surface: ExecutionSurface, cli: CliCommand, limits: SurfaceLimits, local: LocalPlacement): Promise<SurfaceLaunch> {
  if (surface.kind === 'local_subprocess') return { ...(await local.sandbox.wrap(local.sessionId, cli)), failure: () => null };
  const target = `${surface.user}@${surface.host}:${surface.port ?? SSH_PORT}`;
  return {
    command: 'ssh',
    args: [...sshOptions(surface), '--', surface.host!, `sh -c ${shellQuote(remoteScript(cli, limits))}`],
    // The local side of ssh: the session's directory (it exists here too) and the same allowlisted
    // environment, of which ssh itself only uses HOME (~/.ssh) and PATH.
    cwd: cli.cwd,
    env: cli.env,
    // Always a pipe: its end is how the remote wrapper learns that the run is over (see remoteScript).
    stdin: 'control',
    exitOf: (exit) => exit,
    failure(exit, sawOutput) {
      // ssh exits 255 for its own errors (refused, unreachable, auth, host key). Without a single
      // output line that is the connection; a CLI that exits 255 silently would be misread as one.
      if (exit.code !== 255 || sawOutput) return null;
      const reason = exit.stderr.trim().split('\n').at(-1) || 'ssh exited with status 255';
      return new AsmError('connection_failed', `ssh to ${target} failed: ${reason}`, { details: { surface: 'ssh', host: surface.host } });
    },
  };
}

const SSH_PORT = 22;
/** Seconds to reach the host, and to notice that a connection died (ServerAlive × count). */
const SSH_CONNECT_TIMEOUT_S = 10;
const SSH_ALIVE_INTERVAL_S = 15;

function sshOptions(surface: ExecutionSurface): string[] {
  const checking = surface.host_key_checking === 'accept_new' ? 'accept-new' : 'yes';
  return [
    '-T',
    '-o', 'BatchMode=yes',
    '-o', `StrictHostKeyChecking=${checking}`,
    ...(surface.known_hosts_file ? ['-o', `UserKnownHostsFile=${surface.known_hosts_file}`] : []),
    ...(surface.identity_file ? ['-i', surface.identity_file, '-o', 'IdentitiesOnly=yes'] : []),
    '-o', `ConnectTimeout=${SSH_CONNECT_TIMEOUT_S}`,
    '-o', `ServerAliveInterval=${SSH_ALIVE_INTERVAL_S}`,
    '-o', 'ServerAliveCountMax=3',
    '-p', String(surface.port ?? SSH_PORT),
    '-l', surface.user!,
  ];
}

/**
 * Host-specific names: the remote account's login sets its own, and the node's would point at
 * directories that may not exist there.
 */
const HOST_ENV_NAMES = new Set(['PATH', 'HOME', 'TMPDIR']);

/**
 * The POSIX sh program run on the host. Every value (cwd, env values, binary, each argument) is one
 * single-quoted word, so nothing from a prompt is ever interpreted by a shell.
 *
 * The CLI runs in its own session (setsid), so its whole group, tools included, can be signalled.
 * Its stdin is fed by `cat` from the wrapper's stdin (or is /dev/null for a CLI that takes none,
 * while `cat` still watches the wrapper's stdin);
 * when the wrapper's stdin ends (the node closed it, or the ssh client is gone), the CLI gets EOF,
 * and if it is still running after exitGraceMs its group gets SIGTERM, then SIGKILL after
 * killGraceMs. Whatever is left in the group when the CLI exits is killed, as the local runner does.
 * The wrapper exits with the CLI's status.
 */
export function remoteScript(cli: CliCommand, limits: SurfaceLimits): string {
  const env = Object.entries(cli.env)
    .filter(([name]) => !HOST_ENV_NAMES.has(name))
    .map(([name, value]) => shellQuote(`${name}=${value}`));
  const run = ['env', ...env, shellQuote(cli.command), ...cli.args.map(shellQuote)].join(' ');
  const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));
  // Runs as the CLI's session leader, so the feeding `cat` belongs to the group that is stopped.
  const feedAndRun =
    cli.stdin === 'control'
      ? `{ cat; kill -USR1 "$1" 2>/dev/null; } <&3 | ${run}`
      : `{ cat >/dev/null; kill -USR1 "$1" 2>/dev/null; } <&3 & ${run} </dev/null`;
  return [
    `cd ${shellQuote(cli.cwd)} || exit 126`,
    'exec 3<&0',
    'eof=',
    "trap 'eof=1' USR1",
    `setsid sh -c ${shellQuote(feedAndRun)} sh "$$" &`,
    'cli=$!',
    'wait "$cli" 2>/dev/null; status=$?',
    'if [ -n "$eof" ] && [ "$status" -gt 128 ]; then',
    `  { sleep ${seconds(limits.exitGraceMs)}; kill -TERM -"$cli"; sleep ${seconds(limits.killGraceMs)}; kill -KILL -"$cli"; } >/dev/null 2>&1 3<&- &`,
    '  stopper=$!',
    '  wait "$cli" 2>/dev/null; status=$?',
    '  kill "$stopper" 2>/dev/null',
    'fi',
    'kill -KILL -"$cli" 2>/dev/null',
    'exit "$status"',
  ].join('\n');
}

/** One single-quoted sh word. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** What the operator lends the ssh surface: the hosts it may reach and the directory of the key files it may use. */
export interface SshGrant {
  /** ASM_SSH_HOSTS */
  hosts: string[];
  /** ASM_SSH_FILES_DIR; undefined: no key or known-hosts file may be named. */
  filesDir: string | undefined;
}

const SSH_FILE_FIELDS = ['identity_file', 'known_hosts_file'] as const;

/**
 * The surface of a session or run, checked beyond its schema, in this order: its shape (400 naming
 * the field), the host against the operator's allowlist (403), and only then its files. Files are
 * checked only where the CLI starts on this process (`filesHere`); a remote_node run's worker checks
 * them against its own ASM_SSH_FILES_DIR when the run starts (`confineSshFiles`).
 */
export function checkSurface(surface: ExecutionSurface, field: string, grant: SshGrant, filesHere: boolean): void {
  const sshOnly = ['host', 'port', 'user', ...SSH_FILE_FIELDS, 'host_key_checking'] as const;
  if (surface.kind === 'local_subprocess') {
    const extra = sshOnly.find((key) => surface[key] !== undefined);
    if (extra) throw badField(`${field}.${extra}`, 'is only for kind ssh');
    return;
  }
  for (const key of ['host', 'user'] as const) {
    if (surface[key] === undefined) throw badField(`${field}.${key}`, 'is required for kind ssh');
  }
  // The server's own network position and keys are the operator's to lend: only hosts they listed.
  if (!grant.hosts.includes(surface.host!)) {
    throw new AsmError('forbidden', `${field}.host: ${surface.host} is not one of the hosts this server may ssh to (ASM_SSH_HOSTS)`, {
      details: { field: `${field}.host` },
    });
  }
  for (const key of SSH_FILE_FIELDS) {
    if (surface[key] !== undefined && !isAbsolute(surface[key])) throw badField(`${field}.${key}`, 'must be an absolute path');
  }
  if (filesHere) confineSshFiles(surface, field, grant.filesDir);
}

/**
 * The surface with its key and known-hosts files resolved (symlinks followed) and confined to
 * ASM_SSH_FILES_DIR, so a caller cannot hand ssh any file the service can read (ssh reads and may
 * write them). A file that is missing, unreadable, not a regular file or outside the directory gets
 * one and the same refusal, so the answer never tells which paths exist.
 */
export function confineSshFiles(surface: ExecutionSurface, field: string, filesDir: string | undefined): ExecutionSurface {
  const confined = { ...surface };
  for (const key of SSH_FILE_FIELDS) {
    const path = surface[key];
    if (path === undefined) continue;
    if (filesDir === undefined) {
      throw new AsmError('forbidden', `${field}.${key}: this server takes no ssh files; the operator allows them by setting ASM_SSH_FILES_DIR`, {
        details: { field: `${field}.${key}` },
      });
    }
    const real = readableFileInside(filesDir, path);
    if (real === undefined) throw badField(`${field}.${key}`, 'not a readable file inside ASM_SSH_FILES_DIR');
    confined[key] = real;
  }
  return confined;
}

function readableFileInside(dir: string, path: string): string | undefined {
  try {
    const real = realpathSync(path);
    if (!isInside(realpathSync(dir), real) || !statSync(real).isFile()) return undefined;
    accessSync(real, constants.R_OK);
    return real;
  } catch {
    return undefined;
  }
}
