import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, realpathSync, statSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { constants as os } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import type { SandboxSettings } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { HomeSetup, ProcessExit } from '../providers/types.js';
import { EGRESS_PORT, EGRESS_SOCKET, EgressProxy, RELAY_SCRIPT } from './egress.js';
import { HomeSeeds } from './home-seeds.js';
import { processExists } from './process-group.js';
import { SandboxDirs, type Account } from './sandbox-dirs.js';
import { installFolders, mountArgs, nodePrefix, resolvConf, systemMounts, type Mount } from './sandbox-mounts.js';
import { checkWorkingDirectory, spawnError } from './subprocess.js';
import { BUILT_INIT, GROUP_SIGNALS, initCommand, initMounts, initProgramAt, type InitTools } from './sandbox-init.js';
import { shellQuote } from './surfaces.js';
import type { CliCommand, Sandbox, SandboxedCommand, SandboxLauncher, SessionCli } from './types.js';

/**
 * The bubblewrap sandbox (sandbox.ts says what it guarantees). One run's command line:
 *
 *   env --ignore-signal=… bwrap <namespaces> --as-pid-1 <mounts> --chdir <cwd> --setenv HOME … TMPDIR … --
 *       /run/asm-init [--user=<uid>:<gid>] -- <CLI> <args>
 *
 * where /run/asm-init is native/sandbox-init.c, built at install (ASM_SANDBOX_INIT=native, the
 * default). Where it is not built, or with ASM_SANDBOX_INIT=shell, three programs do its work
 * (sandbox-init.ts builds the part after `--`):
 *
 *       sh -c '… "$@" …' sh  [setpriv --reuid=<user> … --]  env --default-signal=…  <CLI> <args>
 *
 * The same sandbox either way (test/backends/sandbox-init.test.ts runs both); the init program saves
 * the shell's, setpriv's and env's execs: 5.6 of the 19.6 ms the shell's chain added to a start on a
 * slow-forking host (bench/RESULTS.md, twenty-sixth pass).
 *
 * - Namespaces: PID (a fresh /proc shows only the run's processes) and IPC. The network is the host's,
 *   or, with ASM_SANDBOX_ALLOWED_HOSTS, a namespace of its own whose one way out is the egress proxy
 *   (egress.ts): its relay then starts the CLI.
 * - Mounts: on an empty root, /usr, /etc and the /bin, /lib… of the host read-only; a fresh /proc,
 *   /dev and /tmp; the Node.js that runs the service and the CLI's install folder read-only; the
 *   operator's ASM_SANDBOX_READ_ONLY and ASM_SANDBOX_WRITABLE; the session's HOME, TMP and working
 *   directory read-write, each at its own path, and its MCP folder (sandbox-dirs.ts) read-only at MCP_FOLDER. Nothing else of the host: not /run (sockets), /var,
 *   /root or /home, the service's folder, or the other sessions. Secrets of /etc and the service's
 *   own files (config.ts, SandboxSettings.hide) are masked where a mount would show them.
 * - Where the service is root, bwrap runs as root (it must reach folders only root may, such as a CLI
 *   installed under /root) and the CLI runs as ASM_SANDBOX_USER, without capabilities and with
 *   no_new_privs: setpriv drops to it inside, after the mounts, for the CLI (the namespace's init stays
 *   root, so that bwrap's --die-with-parent can kill it). Otherwise bwrap uses a user
 *   namespace and the CLI runs as the service's user. (The init program drops to it as setpriv does.)
 * - Signals: the service signals the CLI's whole process group (its interrupts, the stop escalation).
 *   bwrap and the namespace's init (which bwrap waits for, and whose end ends the namespace: it
 *   reaps what the namespace leaves it meanwhile) run with those signals ignored, and the CLI gets
 *   them back at their defaults. The status is the CLI's, and 128 + N for a CLI killed by signal N, which
 *   exitOf reads back as that signal for the signals the service sends.
 */

/**
 * Where a sandbox shows the session's MCP folder (sandbox-dirs.ts), read-only: a path of its own
 * outside /tmp, whose parents no one else may write (Gemini CLI ignores a settings file under a
 * folder others may write, as the sandbox's /tmp is).
 */
const MCP_FOLDER = '/run/asm-mcp';

/** The service's own sessions (the start-up check, the HOME setups), `asm-<pid>-<n>`: never a session id (those start `ses_`). */
const THROWAWAY = /^asm-(\d+)-\d+$/;

/**
 * The signals whose 128 + N status exitOf reads back as a death by that signal: those the service
 * sends a run (GROUP_SIGNALS and SIGKILL). Other statuses stay codes: CLIs exit with 128 + N for
 * reasons of their own (gemini exits 145 for an HTTP 401).
 */
const SIGNALS_BY_STATUS = new Map(
  [...GROUP_SIGNALS.split(','), 'KILL'].map((name) => [128 + os.signals[`SIG${name}` as NodeJS.Signals], `SIG${name}` as NodeJS.Signals]),
);

interface Tools extends InitTools {
  bwrap: string;
  setsid: string;
}

export class BwrapSandbox implements Sandbox {
  readonly kind = 'bwrap';
  private readonly outer: string[];
  private readonly inner: string[];
  private readonly system: { args: string[]; folders: string[] };
  private readonly shared: Mount[];
  /** The proxy variables of a restricted network. */
  private readonly proxyEnv: string[];
  /** The operator's and the service's files, and the other sessions' folders, wherever a mount would show them. */
  private readonly hidden: string[];
  /** What a CLI's first start makes in a new HOME, made once (home-seeds.ts); null where ASM_SANDBOX_HOME_SETUP_MS is 0. */
  private seeds: HomeSeeds | null = null;
  /** Aborted at close: a setup still running is killed. */
  private readonly closing = new AbortController();
  /** Throwaway sessions (the check, the setups) made so far, for their names. */
  private throwaways = 0;
  /** masksOf's answers, by the names hidden and the CLI's PATH (the service's, through the allowlist: one or a few). */
  private readonly masks = new Map<string, string[]>();

  private constructor(
    private readonly settings: SandboxSettings,
    private readonly tools: Tools,
    private readonly account: Account | null,
    private readonly dirs: SandboxDirs,
    private readonly egress: EgressProxy | null,
  ) {
    this.outer = [tools.env, `--ignore-signal=${GROUP_SIGNALS}`, tools.bwrap, '--unshare-pid', '--as-pid-1', '--unshare-ipc', '--die-with-parent'];
    if (egress) this.outer.push('--unshare-net');
    if (account) this.outer.push('--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID', '--cap-add', 'CAP_SETPCAP');
    const relay = egress ? [realpathSync(process.execPath), '-e', RELAY_SCRIPT, EGRESS_SOCKET, String(EGRESS_PORT)] : [];
    this.inner = initCommand(tools, account, relay);
    this.system = systemMounts();
    this.hidden = [...settings.hide, settings.root];
    this.shared = [
      { path: nodePrefix(), writable: false },
      ...(resolvConf() ? [{ path: resolvConf()!, writable: false }] : []),
      ...settings.readOnly.map((path) => ({ path, writable: false })),
      ...settings.writable.map((path) => ({ path, writable: true })),
      ...(egress ? [{ path: EGRESS_SOCKET, source: egress.socketPath, writable: true }] : []),
      ...initMounts(tools),
    ];
    const proxy = `http://127.0.0.1:${EGRESS_PORT}`;
    this.proxyEnv = egress ? ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'].flatMap((name) => ['--setenv', name, proxy]) : [];
  }

  /** The sandbox of these settings, with its tools found and its root made; throws an Error saying what is missing. */
  static async create(settings: SandboxSettings, log: Logger): Promise<BwrapSandbox> {
    const root = process.getuid!() === 0;
    const init = settings.init === 'native' ? initProgramAt(BUILT_INIT, log) : undefined;
    const tools: Tools = {
      bwrap: tool('bwrap', 'install bubblewrap (Debian: apt-get install bubblewrap)'),
      env: tool('env', 'install coreutils 8.31 or later'),
      sh: tool('sh', 'install a POSIX shell'),
      setsid: tool('setsid', 'install util-linux'),
      setpriv: root && !init ? tool('setpriv', 'install util-linux') : undefined,
      init,
    };
    const account = root ? await accountOf(settings.user) : null;
    const dirs = new SandboxDirs(settings.root, account, settings.homeTemplate);
    await dirs.init();
    // The throwaway sessions (inThrowaway) of a process that is gone: it crashed before it removed them.
    for (const sessionId of await dirs.sessions()) {
      const owner = THROWAWAY.exec(sessionId);
      if (owner && !processExists(Number(owner[1]))) await dirs.release(sessionId);
    }
    const egress = settings.allowedHosts.length ? await EgressProxy.start(join(settings.root, 'egress.sock'), settings.allowedHosts) : null;
    const sandbox = new BwrapSandbox(settings, tools, account, dirs, egress);
    if (settings.homeSetupMs > 0) sandbox.seeds = await HomeSeeds.open(settings.root, (binary, setup, use) => sandbox.runSetup(binary, setup, use), log);
    return sandbox;
  }

  /** The account CLIs run as: ASM_SANDBOX_USER where the service is root, the service's own otherwise. */
  get user(): string {
    return this.account ? `${this.settings.user} (${this.account.uid}:${this.account.gid})` : `the service's (uid ${process.getuid!()})`;
  }

  async check(): Promise<void> {
    try {
      await this.inThrowaway(async (sessionId, home) => {
        const { code, stderr } = await this.runToEnd(sessionId, { command: 'true', args: [], cwd: home, env: { PATH: process.env.PATH ?? '' }, stdin: 'closed' }, [], 0);
        if (code !== 0) throw new Error(stderr.trim() || `bwrap exited with status ${code}`);
      });
    } catch (err) {
      throw new Error(
        `ASM_SANDBOX=bwrap: the sandbox does not work here: ${(err as Error).message}. Install bubblewrap and, for a service that is not root, allow unprivileged user namespaces; or set ASM_SANDBOX=none to run agent CLIs without a sandbox (only where every tenant is trusted).`,
      );
    }
  }

  async wrap(sessionId: string, cli: CliCommand): Promise<SandboxedCommand> {
    checkWorkingDirectory(cli.cwd);
    const binary = locate(cli.command, cli.cwd, cli.env.PATH ?? '');
    const args = await this.commandLine(sessionId, cli.cwd, binary, installFolders(binary), this.masksOf(cli.hiddenExecutables ?? [], cli.env.PATH ?? ''));
    return { command: this.outer[0], args: [...args.slice(1), ...cli.args], cwd: cli.cwd, env: cli.env, stdin: cli.stdin, exitOf: sandboxExit };
  }

  prepare(sessionId: string, cli?: SessionCli): void {
    const setup = cli?.provider.homeSetup;
    const seeds = this.seeds;
    const seed = seeds && setup ? async () => seeds.ready(cli.provider.name, locate(cli.binary, '/', process.env.PATH ?? ''), { ...setup, env: { ...setup.env, ...cli.env } }) : undefined;
    this.dirs.folders(sessionId, seed).catch(() => undefined);
  }

  /**
   * A launcher script: the SDK runs it and signals that process alone, so the script starts the
   * sandbox in a process group of its own (setsid), passes the signals it gets on to that group, and
   * exits with the sandbox's status. It writes that group down, and `dispose` kills what is left of
   * it: an SDK may SIGKILL the script, which no trap sees, and bwrap's --die-with-parent cannot kill
   * a CLI that runs as another user (a parent's death signal obeys the kill permission).
   */
  async launcher(sessionId: string, runId: string, cli: Omit<CliCommand, 'args' | 'stdin'>): Promise<SandboxLauncher> {
    checkWorkingDirectory(cli.cwd);
    // A binary that is not there stays the SDK's failure to report, as it is without a sandbox: the
    // launcher runs it anyway, and the sandbox's exec fails.
    let binary = cli.command;
    let installs: string[] = [];
    try {
      binary = locate(cli.command, cli.cwd, cli.env.PATH ?? '');
      installs = installFolders(binary);
    } catch {
      // reported by the launcher's exit
    }
    const words = (await this.commandLine(sessionId, cli.cwd, binary, installs)).map(shellQuote).join(' ');
    const path = this.dirs.launcherPath(sessionId, runId);
    const groupFile = `${path}.group`;
    const script = [
      `#!${this.tools.sh}`,
      '# One run of an agent CLI in ASM\'s sandbox (src/backends/bwrap.ts), started by an SDK.',
      'exec 3<&0',
      `${shellQuote(this.tools.setsid)} ${words} "$@" <&3 3<&- &`,
      'sandbox=$!',
      `echo "$sandbox" > ${shellQuote(groupFile)}`,
      'exec 3<&-',
      ...GROUP_SIGNALS.split(',').map((signal) => `trap 'kill -${signal} "-$sandbox" 2>/dev/null' ${signal}`),
      'while :; do',
      '  wait "$sandbox"; status=$?',
      '  kill -0 "$sandbox" 2>/dev/null || exit "$status"',
      'done',
      '',
    ].join('\n');
    await writeFile(path, script, { mode: 0o700 });
    const dispose = async () => {
      const group = Number(await readFile(groupFile, 'utf8').catch(() => ''));
      if (group > 1) signalGroup(group, 'SIGKILL');
      await Promise.all([rm(path, { force: true }), rm(groupFile, { force: true })]);
    };
    return { command: path, env: cli.env, dispose };
  }

  async mcpFolder(sessionId: string, files: Array<{ name: string; content: string }>): Promise<string> {
    await this.dirs.writeMcpFiles(sessionId, files);
    return MCP_FOLDER;
  }

  sessions(): Promise<string[]> {
    return this.dirs.sessions();
  }

  release(sessionId: string): Promise<void> {
    return this.dirs.release(sessionId);
  }

  async close(): Promise<void> {
    this.closing.abort();
    await Promise.all([this.egress?.close(), this.seeds?.close()]);
  }

  /**
   * The paths that hide `names` from a CLI with this PATH: every executable of those names on it, by
   * its real path, so that a symlink to one (/bin → usr/bin) shows the mask too. Found once per PATH,
   * as the sandbox's own tools are: the run's spawn would otherwise wait for two file checks a PATH
   * folder and name, at every start.
   */
  private masksOf(names: string[], path: string): string[] {
    if (names.length === 0) return [];
    const key = `${names.join('\0')}\0${path}`;
    let masks = this.masks.get(key);
    if (!masks) {
      masks = [...new Set(names.flatMap((name) => [...executables(name, path)].map((found) => realpathSync(found))))];
      this.masks.set(key, masks);
    }
    return masks;
  }

  /** A session of the service's own, for a command that is not a tenant's run; its folders go after `use`. */
  private async inThrowaway<T>(use: (sessionId: string, home: string) => Promise<T>): Promise<T> {
    const sessionId = `asm-${process.pid}-${++this.throwaways}`; // THROWAWAY
    try {
      return await use(sessionId, (await this.dirs.folders(sessionId)).home);
    } finally {
      await this.dirs.release(sessionId);
    }
  }

  /**
   * A CLI's first start in a throwaway HOME (HomeSeeds): `setup.input` on its stdin, which then ends;
   * it must exit 0 within ASM_SANDBOX_HOME_SETUP_MS. Its environment is PATH and the setup's own fixed
   * variables: nothing of a tenant's.
   */
  private runSetup<T>(binary: string, setup: HomeSetup, use: (home: string) => Promise<T>): Promise<T> {
    return this.inThrowaway(async (sessionId, home) => {
      const cli = { command: binary, args: setup.args, cwd: home, env: { ...setup.env, PATH: process.env.PATH ?? '' }, stdin: 'control' as const };
      const { code, stderr } = await this.runToEnd(sessionId, cli, setup.input, this.settings.homeSetupMs);
      if (code !== 0) throw new Error(`${binary} ${setup.args.join(' ')} exited with ${code === null ? 'a signal' : `status ${code}`}${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
      return use(home);
    });
  }

  /**
   * Runs `cli` in the session's sandbox to its end: `input` lines on its stdin, which then closes,
   * stdout dropped, the last 2 KB of stderr kept; killed after `timeoutMs` (0: never) or at close.
   */
  private async runToEnd(sessionId: string, cli: CliCommand, input: string[], timeoutMs: number): Promise<{ code: number | null; stderr: string }> {
    const wrapped = await this.wrap(sessionId, cli);
    const signal = timeoutMs > 0 ? AbortSignal.any([this.closing.signal, AbortSignal.timeout(timeoutMs)]) : this.closing.signal;
    return new Promise((done) => {
      // bwrap (env execs it) is the child; killing it kills the sandbox (--die-with-parent).
      const child = spawn(wrapped.command, wrapped.args, { cwd: wrapped.cwd, env: wrapped.env, stdio: ['pipe', 'ignore', 'pipe'], signal, killSignal: 'SIGKILL' });
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr = (stderr + chunk).slice(-2048)));
      child.stdin.on('error', () => undefined);
      child.stdin.end(input.map((line) => `${line}\n`).join(''));
      const stopped = () => (this.closing.signal.aborted ? 'stopped: the sandbox is closing' : `stopped after ${timeoutMs} ms`);
      child.on('error', (err) => done({ code: null, stderr: err.name === 'AbortError' ? stopped() : err.message }));
      child.on('close', (code) => done({ code, stderr }));
    });
  }

  /** The whole command line up to the CLI's own arguments: the outer and inner wrappers around `binary`. */
  private async commandLine(sessionId: string, cwd: string, binary: string, installs: string[], masked: string[] = []): Promise<string[]> {
    if (realpathSync(cwd) !== cwd) throw new AsmError('config_invalid', `working directory is reached through a symlink: ${cwd}`);
    const { home, tmp } = await this.dirs.folders(sessionId);
    await this.dirs.handOver(cwd);
    const mcp = this.dirs.mcpDir(sessionId);
    const mounts: Mount[] = [
      ...this.shared,
      ...installs.map((path) => ({ path, writable: false })),
      { path: home, writable: true },
      { path: tmp, writable: true },
      { path: cwd, writable: true },
      ...(existsSync(mcp) ? [{ path: MCP_FOLDER, source: mcp, writable: false }] : []),
    ];
    return [
      ...this.outer,
      ...this.system.args,
      ...mountArgs(mounts, this.system.folders, [...this.hidden, ...masked]),
      '--chdir', cwd,
      '--setenv', 'HOME', home,
      '--setenv', 'TMPDIR', tmp,
      ...this.proxyEnv,
      '--',
      ...this.inner,
      binary,
    ];
  }
}

/** An executable the sandbox needs, found on the service's PATH. */
function tool(name: string, hint: string): string {
  const found = onPath(name, process.env.PATH ?? '');
  if (!found) throw new Error(`ASM_SANDBOX=bwrap needs ${name}, which is not on PATH: ${hint}; or set ASM_SANDBOX=none to run agent CLIs without a sandbox`);
  return found;
}

function onPath(name: string, path: string): string | undefined {
  return executables(name, path).next().value;
}

/** The executable files named `name` on `path`, in its order. */
function* executables(name: string, path: string): Generator<string, undefined> {
  for (const folder of path.split(delimiter)) {
    if (!isAbsolute(folder)) continue;
    const candidate = join(folder, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) yield candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** ASM_SANDBOX_USER as uid and gid: a user name, or `uid:gid`. The sandbox never runs a CLI as root. */
async function accountOf(user: string): Promise<Account> {
  const numeric = /^(\d+):(\d+)$/.exec(user);
  let ids: { uid: number; gid: number };
  if (numeric) {
    ids = { uid: Number(numeric[1]), gid: Number(numeric[2]) };
  } else {
    const id = async (flag: string) => Number((await promisify(execFile)('id', [flag, user])).stdout.trim());
    try {
      ids = { uid: await id('-u'), gid: await id('-g') };
    } catch {
      throw new Error(`ASM_SANDBOX_USER: no user "${user}" on this host (the account agent CLIs run as where the service is root)`);
    }
  }
  if (ids.uid === 0 || ids.gid === 0) throw new Error(`ASM_SANDBOX_USER: "${user}" is root; agent CLIs must run as an unprivileged user`);
  return { ...ids, chown: tool('chown', 'install coreutils') };
}

/**
 * The binary as the CLI would be started: an absolute path, found on the CLI's PATH like spawn
 * would; a missing or non-executable one is the same cli_not_found error spawn gives.
 */
function locate(command: string, cwd: string, path: string): string {
  const found = command.includes('/') ? resolve(cwd, command) : onPath(command, path);
  if (!found || !existsSync(found)) throw spawnError(Object.assign(new Error('not found'), { code: 'ENOENT' }), command);
  try {
    accessSync(found, constants.X_OK);
    if (!statSync(found).isFile()) throw new Error('not a file');
  } catch (err) {
    throw spawnError(Object.assign(err as Error, { code: 'EACCES' }), command);
  }
  return found;
}

/** Signals a process group that may be gone already. */
function signalGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-group, signal);
  } catch {
    // ESRCH: nothing left of it
  }
}

/** The CLI's exit from bwrap's: status 128 + N is the CLI killed by signal N (SIGNALS_BY_STATUS). */
function sandboxExit(exit: ProcessExit): ProcessExit {
  const signal = exit.code === null ? undefined : SIGNALS_BY_STATUS.get(exit.code);
  return signal ? { ...exit, code: null, signal } : exit;
}
