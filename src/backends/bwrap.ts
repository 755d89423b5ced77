import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, lstatSync, readdirSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { constants as os } from 'node:os';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { SandboxSettings } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { ProcessExit } from '../providers/types.js';
import { EGRESS_PORT, EGRESS_SOCKET, EgressProxy, RELAY_SCRIPT } from './egress.js';
import { SandboxDirs, type Account } from './sandbox-dirs.js';
import { checkWorkingDirectory, spawnError } from './subprocess.js';
import { shellQuote } from './surfaces.js';
import type { CliCommand, Sandbox, SandboxedCommand, SandboxLauncher } from './types.js';

/**
 * The bubblewrap sandbox (sandbox.ts says what it guarantees). One run's command line:
 *
 *   env --ignore-signal=… bwrap <namespaces> --as-pid-1 <mounts> --chdir <cwd> --setenv HOME … TMPDIR … --
 *       [setpriv --reuid=<user> … --]  sh -c '… "$@" …' sh  env --default-signal=…  <CLI> <args>
 *
 * - Namespaces: PID (a fresh /proc shows only the run's processes) and IPC. The network is the host's,
 *   or, with ASM_SANDBOX_ALLOWED_HOSTS, a namespace of its own whose one way out is the egress proxy
 *   (egress.ts): its relay then starts the CLI.
 * - Mounts: on an empty root, /usr, /etc and the /bin, /lib… of the host read-only; a fresh /proc,
 *   /dev and /tmp; the Node.js that runs the service and the CLI's install folder read-only; the
 *   operator's ASM_SANDBOX_READ_ONLY and ASM_SANDBOX_WRITABLE; the session's HOME, TMP and working
 *   directory read-write, each at its own path. Nothing else of the host: not /run (sockets), /var,
 *   /root or /home, the service's folder, or the other sessions. Secrets of /etc and the service's
 *   own files (config.ts, SandboxSettings.hide) are masked where a mount would show them.
 * - Where the service is root, bwrap runs as root (it must reach folders only root may, such as a CLI
 *   installed under /root) and the CLI runs as ASM_SANDBOX_USER, without capabilities and with
 *   no_new_privs: setpriv drops to it inside, after the mounts. Otherwise bwrap uses a user
 *   namespace and the CLI runs as the service's user.
 * - Signals: the service signals the CLI's whole process group (its interrupts, the stop escalation).
 *   bwrap and the namespace's init (the `sh`, which bwrap waits for, so that it leaves no zombie and
 *   ends only once the namespace is empty) run with those signals ignored, and the CLI gets them back
 *   at their defaults. The status is the CLI's, and 128 + N for a CLI killed by signal N, which
 *   exitOf reads back as that signal for the signals the service sends.
 */

/** Signals the service sends a CLI's process group: providers' interrupts and the stop escalation. */
const GROUP_SIGNALS = 'INT,TERM,HUP,QUIT';

/** Files of /etc that only the system may read, masked even where the CLI's account could read them. */
const ETC_SECRETS = ['/etc/shadow', '/etc/shadow-', '/etc/gshadow', '/etc/gshadow-', '/etc/sudoers', '/etc/sudoers.d', '/etc/ssl/private'];

/**
 * The signals whose 128 + N status exitOf reads back as a death by that signal: those the service
 * sends a run (GROUP_SIGNALS and SIGKILL). Other statuses stay codes: CLIs exit with 128 + N for
 * reasons of their own (gemini exits 145 for an HTTP 401).
 */
const SIGNALS_BY_STATUS = new Map(
  [...GROUP_SIGNALS.split(','), 'KILL'].map((name) => [128 + os.signals[`SIG${name}` as NodeJS.Signals], `SIG${name}` as NodeJS.Signals]),
);

interface Tools {
  bwrap: string;
  env: string;
  sh: string;
  setsid: string;
  /** Only where the service is root. */
  setpriv?: string;
}

/** A folder (or file) of the host shown in the sandbox, at the same path unless it has a `source`. */
interface Mount {
  path: string;
  writable: boolean;
  source?: string;
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

  private constructor(
    private readonly settings: SandboxSettings,
    private readonly tools: Tools,
    private readonly account: Account | null,
    private readonly dirs: SandboxDirs,
    private readonly egress: EgressProxy | null,
  ) {
    const privileged = account !== null;
    this.outer = [tools.env, `--ignore-signal=${GROUP_SIGNALS}`, tools.bwrap, '--unshare-pid', '--as-pid-1', '--unshare-ipc', '--die-with-parent'];
    if (egress) this.outer.push('--unshare-net');
    if (privileged) this.outer.push('--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID', '--cap-add', 'CAP_SETPCAP');
    this.inner = [
      ...(privileged
        ? // Changing user clears bwrap's --die-with-parent: the init sets it again, to die with bwrap.
          [tools.setpriv!, `--reuid=${account.uid}`, `--regid=${account.gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--pdeathsig=KILL', '--']
        : []),
      // The CLI runs in a subshell, so the shell stays as the init and the CLI is its child; the shell's
      // own stderr is dropped ("Terminated" when the CLI is stopped), the CLI's is the real one.
      tools.sh, '-c', 'exec 3>&2 2>/dev/null; (exec "$@" 2>&3 3>&-); exit $?', 'sh',
      ...(egress ? [realpathSync(process.execPath), '-e', RELAY_SCRIPT, EGRESS_SOCKET, String(EGRESS_PORT)] : []),
      // The shell exports PWD, which is not the CLI's to have.
      tools.env, '-u', 'PWD', `--default-signal=${GROUP_SIGNALS}`,
    ];
    this.system = systemMounts();
    this.hidden = [...settings.hide, settings.root];
    this.shared = [
      { path: nodePrefix(), writable: false },
      ...(resolvConf() ? [{ path: resolvConf()!, writable: false }] : []),
      ...settings.readOnly.map((path) => ({ path, writable: false })),
      ...settings.writable.map((path) => ({ path, writable: true })),
      ...(egress ? [{ path: EGRESS_SOCKET, source: egress.socketPath, writable: true }] : []),
    ];
    const proxy = `http://127.0.0.1:${EGRESS_PORT}`;
    this.proxyEnv = egress ? ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'].flatMap((name) => ['--setenv', name, proxy]) : [];
  }

  /** The sandbox of these settings, with its tools found and its root made; throws an Error saying what is missing. */
  static async create(settings: SandboxSettings): Promise<BwrapSandbox> {
    const root = process.getuid!() === 0;
    const tools: Tools = {
      bwrap: tool('bwrap', 'install bubblewrap (Debian: apt-get install bubblewrap)'),
      env: tool('env', 'install coreutils 8.31 or later'),
      sh: tool('sh', 'install a POSIX shell'),
      setsid: tool('setsid', 'install util-linux'),
      setpriv: root ? tool('setpriv', 'install util-linux') : undefined,
    };
    const account = root ? await accountOf(settings.user) : null;
    const dirs = new SandboxDirs(settings.root, account, settings.homeTemplate);
    await dirs.init();
    const egress = settings.allowedHosts.length ? await EgressProxy.start(join(settings.root, 'egress.sock'), settings.allowedHosts) : null;
    return new BwrapSandbox(settings, tools, account, dirs, egress);
  }

  /** The account CLIs run as: ASM_SANDBOX_USER where the service is root, the service's own otherwise. */
  get user(): string {
    return this.account ? `${this.settings.user} (${this.account.uid}:${this.account.gid})` : `the service's (uid ${process.getuid!()})`;
  }

  async check(): Promise<void> {
    const sessionId = `check-${process.pid}`;
    try {
      const { home } = await this.dirs.folders(sessionId);
      const cli = await this.wrap(sessionId, { command: 'true', args: [], cwd: home, env: { PATH: process.env.PATH ?? '' }, stdin: 'closed' });
      const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((done) => {
        const child = spawn(cli.command, cli.args, { cwd: cli.cwd, env: cli.env, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (chunk) => (stderr += chunk));
        child.on('error', (err) => done({ code: null, stderr: err.message }));
        child.on('close', (code) => done({ code, stderr }));
      });
      if (code !== 0) throw new Error(stderr.trim() || `bwrap exited with status ${code}`);
    } catch (err) {
      throw new Error(
        `ASM_SANDBOX=bwrap: the sandbox does not work here: ${(err as Error).message}. Install bubblewrap and, for a service that is not root, allow unprivileged user namespaces; or set ASM_SANDBOX=none to run agent CLIs without a sandbox (only where every tenant is trusted).`,
      );
    } finally {
      await this.dirs.release(sessionId);
    }
  }

  async wrap(sessionId: string, cli: CliCommand): Promise<SandboxedCommand> {
    checkWorkingDirectory(cli.cwd);
    const binary = locate(cli.command, cli.cwd, cli.env.PATH ?? '');
    const args = await this.commandLine(sessionId, cli.cwd, binary, installFolders(binary));
    return { command: this.outer[0], args: [...args.slice(1), ...cli.args], cwd: cli.cwd, env: cli.env, stdin: cli.stdin, exitOf: sandboxExit };
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

  sessions(): Promise<string[]> {
    return this.dirs.sessions();
  }

  release(sessionId: string): Promise<void> {
    return this.dirs.release(sessionId);
  }

  async close(): Promise<void> {
    await this.egress?.close();
  }

  /** The whole command line up to the CLI's own arguments: the outer and inner wrappers around `binary`. */
  private async commandLine(sessionId: string, cwd: string, binary: string, installs: string[]): Promise<string[]> {
    if (realpathSync(cwd) !== cwd) throw new AsmError('config_invalid', `working directory is reached through a symlink: ${cwd}`);
    const { home, tmp } = await this.dirs.folders(sessionId);
    await this.dirs.handOver(cwd);
    const mounts: Mount[] = [
      ...this.shared,
      ...installs.map((path) => ({ path, writable: false })),
      { path: home, writable: true },
      { path: tmp, writable: true },
      { path: cwd, writable: true },
    ];
    return [
      ...this.outer,
      ...this.system.args,
      ...mountArgs(mounts, this.system.folders, this.hidden),
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
  for (const folder of path.split(delimiter)) {
    if (!isAbsolute(folder)) continue;
    const candidate = join(folder, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** ASM_SANDBOX_USER as uid and gid: a user name, or `uid:gid`. The sandbox never runs a CLI as root. */
async function accountOf(user: string): Promise<Account> {
  const numeric = /^(\d+):(\d+)$/.exec(user);
  let account: Account;
  if (numeric) {
    account = { uid: Number(numeric[1]), gid: Number(numeric[2]) };
  } else {
    const id = async (flag: string) => Number((await promisify(execFile)('id', [flag, user])).stdout.trim());
    try {
      account = { uid: await id('-u'), gid: await id('-g') };
    } catch {
      throw new Error(`ASM_SANDBOX_USER: no user "${user}" on this host (the account agent CLIs run as where the service is root)`);
    }
  }
  if (account.uid === 0 || account.gid === 0) throw new Error(`ASM_SANDBOX_USER: "${user}" is root; agent CLIs must run as an unprivileged user`);
  return account;
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

/**
 * The folders a CLI is installed in, to be shown read-only: for a binary of an npm install (its path
 * or its symlink's target inside node_modules) the node_modules folder with its dependencies,
 * otherwise the binary's own folder.
 */
function installFolders(binary: string): string[] {
  const folderOf = (path: string) => {
    const modules = path.indexOf('/node_modules/');
    return modules >= 0 ? path.slice(0, modules + '/node_modules'.length) : dirname(path);
  };
  return [...new Set([binary, realpathSync(binary)].map(folderOf))];
}

/** The Node.js installation running the service, for CLIs that are node scripts (left out when /usr shows it). */
function nodePrefix(): string {
  return dirname(dirname(realpathSync(process.execPath)));
}

/** Where /etc/resolv.conf really is when it links outside /etc (systemd-resolved's stub in /run). */
function resolvConf(): string | undefined {
  try {
    const real = realpathSync('/etc/resolv.conf');
    return real.startsWith('/etc/') ? undefined : real;
  } catch {
    return undefined;
  }
}

/** The host's system, read-only, with a fresh /proc, /dev and /tmp: the mounts every sandbox starts with. */
function systemMounts(): { args: string[]; folders: string[] } {
  const args = ['--ro-bind', '/usr', '/usr'];
  const folders = ['/usr', '/etc', '/proc', '/dev'];
  for (const top of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    const stat = lstatSync(top, { throwIfNoEntry: false });
    if (stat?.isSymbolicLink()) args.push('--symlink', readlinkSync(top), top);
    else if (stat?.isDirectory()) args.push('--ro-bind', top, top), folders.push(top);
  }
  const hostKeys = existsSync('/etc/ssh') ? readdirSync('/etc/ssh').filter((name) => /^ssh_host_.*_key$/.test(name)).map((name) => `/etc/ssh/${name}`) : [];
  args.push('--ro-bind', '/etc', '/etc');
  for (const path of [...ETC_SECRETS, ...hostKeys].filter((path) => existsSync(path))) {
    args.push(...(statSync(path).isDirectory() ? ['--tmpfs', path] : ['--ro-bind', '/dev/null', path]));
  }
  // /tmp is the run's own scratch space, writable by all like the host's; TMPDIR is the session's.
  args.push('--proc', '/proc', '--dev', '/dev', '--perms', '1777', '--tmpfs', '/tmp');
  return { args, folders };
}

const within = (path: string, folder: string) => path === folder || path.startsWith(folder === '/' ? '/' : `${folder}/`);

/**
 * The mounts of one run, parents first: binds for these folders (a read-only folder that another
 * mount already shows is left out, so it cannot turn part of a writable one read-only), and a mask
 * over each hidden path a mount would show: an empty folder, or an empty file. A folder a mount goes
 * in is made first where the host's is not shown (0755, so the CLI's account can pass through it).
 */
function mountArgs(mounts: Mount[], system: string[], hidden: string[]): string[] {
  const binds = mounts.filter(
    (mount, i) =>
      mount.writable ||
      !(system.some((folder) => within(mount.path, folder)) || mounts.some((other, j) => j !== i && within(mount.path, other.path) && (other.path !== mount.path || j < i))),
  );
  const shown = [...system, ...binds.map((bind) => bind.path)];
  const masks = hidden.filter((path) => shown.some((folder) => within(path, folder)) && existsSync(path));
  const ops: Array<Mount & { mask: boolean }> = [...binds.map((bind) => ({ ...bind, mask: false })), ...masks.map((path) => ({ path, mask: true, writable: false }))];
  const depth = (path: string) => path.split('/').length;
  ops.sort((a, b) => depth(a.path) - depth(b.path) || Number(a.mask) - Number(b.mask) || a.path.localeCompare(b.path));
  const args: string[] = [];
  const done: typeof ops = [];
  for (const op of ops) {
    const parents: string[] = [];
    // Up to / or the fresh /tmp, which exist already.
    for (let parent = dirname(op.path); parent !== '/' && parent !== '/tmp'; parent = dirname(parent)) parents.unshift(parent);
    for (const parent of parents) {
      const under = done.filter((other) => within(parent, other.path)).at(-1);
      const hostFolder = under ? !under.mask : system.some((folder) => within(parent, folder));
      if (hostFolder || done.some((other) => other.path === parent)) continue;
      args.push('--perms', '0755', '--dir', parent);
      done.push({ path: parent, mask: true, writable: false });
    }
    if (op.mask) args.push(...(statSync(op.path).isDirectory() ? ['--tmpfs', op.path] : ['--ro-bind', '/dev/null', op.path]));
    else args.push(op.writable ? '--bind' : '--ro-bind', op.source ?? op.path, op.path);
    done.push(op);
  }
  return args;
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
