import { existsSync, lstatSync, readdirSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * What a sandbox shows of the host (bwrap.ts builds the rest of the command line): the system
 * read-only, and one run's folders, each at its own path, with the paths to hide masked.
 */

/** A folder (or file) of the host shown in the sandbox, at the same path unless it has a `source`. */
export interface Mount {
  path: string;
  writable: boolean;
  source?: string;
}

/** Files of /etc that only the system may read, masked even where the CLI's account could read them. */
const ETC_SECRETS = ['/etc/shadow', '/etc/shadow-', '/etc/gshadow', '/etc/gshadow-', '/etc/sudoers', '/etc/sudoers.d', '/etc/ssl/private'];

/**
 * The folders a CLI is installed in, to be shown read-only: for a binary of an npm install (its path
 * or its symlink's target inside node_modules) the node_modules folder with its dependencies,
 * otherwise the binary's own folder.
 */
export function installFolders(binary: string): string[] {
  const folderOf = (path: string) => {
    const modules = path.indexOf('/node_modules/');
    return modules >= 0 ? path.slice(0, modules + '/node_modules'.length) : dirname(path);
  };
  return [...new Set([binary, realpathSync(binary)].map(folderOf))];
}

/** The Node.js installation running the service, for CLIs that are node scripts (left out when /usr shows it). */
export function nodePrefix(): string {
  return dirname(dirname(realpathSync(process.execPath)));
}

/** Where /etc/resolv.conf really is when it links outside /etc (systemd-resolved's stub in /run). */
export function resolvConf(): string | undefined {
  try {
    const real = realpathSync('/etc/resolv.conf');
    return real.startsWith('/etc/') ? undefined : real;
  } catch {
    return undefined;
  }
}

/** The host's system, read-only, with a fresh /proc, /dev and /tmp: the mounts every sandbox starts with. */
export function systemMounts(): { args: string[]; folders: string[] } {
  const args = ['--ro-bind', '/usr', '/usr'];
  const folders = ['/usr', '/etc', '/proc', '/dev'];
  for (const top of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    const stat = lstatSync(top, { throwIfNoEntry: false });
    if (stat?.isSymbolicLink()) args.push('--symlink', readlinkSync(top), top);
    else if (stat?.isDirectory()) args.push('--ro-bind', top, top), folders.push(top);
  }
  const hostKeys = existsSync('/etc/ssh') ? readdirSync('/etc/ssh').filter((name) => /^ssh_host_.*_key$/.test(name)).map((name) => `/etc/ssh/${name}`) : [];
  args.push('--ro-bind', '/etc', '/etc');
  for (const path of [...ETC_SECRETS, ...hostKeys].filter((path) => existsSync(path))) args.push(...emptied(path));
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
export function mountArgs(mounts: Mount[], system: string[], hidden: string[]): string[] {
  const binds = mounts.filter(
    (mount, i) =>
      mount.writable ||
      !(system.some((folder) => within(mount.path, folder)) || mounts.some((other, j) => j !== i && within(mount.path, other.path) && (other.path !== mount.path || j < i))),
  );
  const shown = [...system, ...binds.map((bind) => bind.path)];
  const masks = hidden.filter((path) => shown.some((folder) => within(path, folder)) && existsSync(path));
  const depth = (path: string) => path.split('/').length;
  const ops = [...binds, ...masks.map((path) => ({ path, masked: true }))].sort(
    (a, b) => depth(a.path) - depth(b.path) || Number('masked' in a) - Number('masked' in b) || a.path.localeCompare(b.path),
  );
  const args: string[] = [];
  /** What is mounted or made so far, and whether the host's folder is what shows there. */
  const placed: Array<{ path: string; host: boolean }> = [];
  for (const op of ops) {
    const parents: string[] = [];
    // Up to / or the fresh /tmp, which exist already.
    for (let parent = dirname(op.path); parent !== '/' && parent !== '/tmp'; parent = dirname(parent)) parents.unshift(parent);
    for (const parent of parents) {
      const under = placed.filter((other) => within(parent, other.path)).at(-1);
      const host = under ? under.host : system.some((folder) => within(parent, folder));
      if (host || placed.some((other) => other.path === parent)) continue;
      args.push('--perms', '0755', '--dir', parent);
      placed.push({ path: parent, host: false });
    }
    if ('masked' in op) args.push(...emptied(op.path));
    else args.push(op.writable ? '--bind' : '--ro-bind', op.source ?? op.path, op.path);
    placed.push({ path: op.path, host: !('masked' in op) });
  }
  return args;
}

/** An existing path shown empty: an empty folder, or an empty file. */
function emptied(path: string): string[] {
  return statSync(path).isDirectory() ? ['--tmpfs', path] : ['--ro-bind', '/dev/null', path];
}
