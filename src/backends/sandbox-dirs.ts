import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { constants, type Dirent } from 'node:fs';
import { chmod, copyFile, lchown, lstat, mkdir, readdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AsmError } from '../errors/kinds.js';

/**
 * The folders sandboxes live on, under ASM_SANDBOX_ROOT:
 *
 *   <root>/<session id>/home             the session's HOME, a copy of ASM_SANDBOX_HOME_TEMPLATE to start with
 *   <root>/<session id>/tmp              its TMPDIR
 *   <root>/<session id>/launch-<run id>  the SDK lane's launcher of one run (never seen inside a sandbox)
 *   <root>/<session id>/mcp              the config files of the session's MCP servers, secrets included:
 *                                        the service's, shown read-only in the session's sandbox
 *
 * The root and the session folders are the service's (0700); HOME and TMP belong to the account the
 * CLI runs as. A session's folders are made by its first run and kept until `release`, so the
 * conversations the CLIs keep in HOME are there for the runs that continue them.
 */

/** The account a sandboxed CLI runs as, where it is not the service's own, and how to give it files. */
export interface Account {
  uid: number;
  gid: number;
  /** coreutils' chown, which walks a tree by directory descriptors, never through a symlink swapped in meanwhile. */
  chown: string;
}

export interface SessionFolders {
  home: string;
  tmp: string;
}

/** Names that are safe as one path component. */
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export class SandboxDirs {
  /** Each session's folders, made once per process (a second run waits for the first one's copy). */
  private readonly made = new Map<string, Promise<SessionFolders>>();

  constructor(
    readonly root: string,
    private readonly account: Account | null,
    private readonly template: string | undefined,
  ) {}

  /** Makes the root, or checks the one that is there; throws an Error saying what is wrong with it. */
  async init(): Promise<void> {
    if (this.template && (this.root === this.template || this.root.startsWith(`${this.template}/`))) {
      throw new Error(`ASM_SANDBOX_ROOT ${this.root} is inside ASM_SANDBOX_HOME_TEMPLATE ${this.template}, which is copied into every session's HOME`);
    }
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    const root = await lstat(this.root);
    if (!root.isDirectory()) throw new Error(`ASM_SANDBOX_ROOT ${this.root} is not a directory`);
    if (root.uid !== process.getuid!()) {
      throw new Error(`ASM_SANDBOX_ROOT ${this.root} belongs to uid ${root.uid}, not to the service: its owner could read every session's HOME`);
    }
    if (root.mode & 0o077) await chmod(this.root, 0o700);
  }

  sessionDir(sessionId: string): string {
    return join(this.root, component(sessionId));
  }

  launcherPath(sessionId: string, runId: string): string {
    return join(this.sessionDir(sessionId), `launch-${component(runId)}`);
  }

  mcpDir(sessionId: string): string {
    return join(this.sessionDir(sessionId), 'mcp');
  }

  /**
   * Writes the files of the session's MCP servers (each replaced whole, by a rename, so a run reading
   * one never sees half of it) and answers their folder. Folder and files are the service's, and
   * nobody else may change them: the agent, which may write its HOME, cannot put a symlink where
   * these are written, and Gemini CLI reads a settings file only if root owns it and only root may
   * write it. The files are readable by all (the CLI's account must read them), but their session
   * folder is the service's alone (0700), so only the session's sandbox, which shows them, reaches them.
   */
  async writeMcpFiles(sessionId: string, files: Array<{ name: string; content: string }>): Promise<string> {
    await this.folders(sessionId);
    const dir = this.mcpDir(sessionId);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    for (const file of files) {
      const staged = join(dir, `.${randomUUID()}`);
      await writeFile(staged, file.content, { mode: 0o444, flag: 'wx' });
      await rename(staged, join(dir, component(file.name)));
    }
    return dir;
  }

  /**
   * The session's HOME and TMP, made by its first run. `seed`: a folder whose files a new HOME gets
   * too, after the template's (HomeSeeds), asked for only if this call makes the HOME.
   */
  folders(sessionId: string, seed?: () => Promise<string | undefined>): Promise<SessionFolders> {
    let made = this.made.get(sessionId);
    if (!made) {
      made = this.make(sessionId, seed);
      this.made.set(sessionId, made);
      made.catch(() => this.made.delete(sessionId));
    }
    return made;
  }

  async sessions(): Promise<string[]> {
    return (await readdir(this.root, { withFileTypes: true })).filter((entry) => entry.isDirectory() && ID.test(entry.name)).map((entry) => entry.name);
  }

  async release(sessionId: string): Promise<void> {
    this.made.delete(sessionId);
    await rm(this.sessionDir(sessionId), { recursive: true, force: true });
  }

  /**
   * Hands a workspace folder to the CLI's account, so the CLI can change its files: the folder and
   * everything in it (symlinks themselves, never their targets: `chown -R -P -h`) are chowned, once,
   * while the folder is not the account's yet. Files put there later by another account stay that account's. A
   * folder every account may write already (such as /tmp) is left as it is.
   */
  async handOver(dir: string): Promise<void> {
    if (!this.account) return;
    const folder = await lstat(dir);
    if (folder.uid === this.account.uid || folder.mode & 0o002) return;
    const { uid, gid, chown } = this.account;
    await promisify(execFile)(chown, ['-R', '-P', '-h', `${uid}:${gid}`, '--', dir]);
  }

  private async make(sessionId: string, seed?: () => Promise<string | undefined>): Promise<SessionFolders> {
    const dir = this.sessionDir(sessionId);
    const folders = { home: join(dir, 'home'), tmp: join(dir, 'tmp') };
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // A folder there already is a session's from an earlier process.
    const [home, tmp] = await Promise.all([made(mkdir(folders.home, { mode: 0o700 }), true), made(mkdir(folders.tmp, { mode: 0o700 }), true)]);
    await Promise.all([
      home ? this.fill(folders.home, seed) : this.handOver(folders.home),
      tmp ? this.own(folders.tmp) : this.handOver(folders.tmp),
    ]);
    return folders;
  }

  /**
   * A HOME this process just made: the account's, with a copy of the template, then of the seed's
   * files the template does not have; removed if a copy fails, so the next run copies again.
   */
  private async fill(home: string, seed?: () => Promise<string | undefined>): Promise<void> {
    const seedFolder = seed?.().catch(() => undefined);
    try {
      await this.own(home);
      if (this.template) await this.copyOwned(this.template, home);
      const from = await seedFolder;
      if (from) await this.copyOwned(from, home, true);
    } catch (err) {
      await rm(home, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Copies what is in folder `from` into folder `to`, each entry handed to the CLI's account as it
   * is made (own): files with their mode, folders with theirs, symlinks as they are (never followed).
   * One walk with an operation per entry: fs.cp, and a second walk to own its copy, held up a cold
   * run's spawn (bench -- agents, cold_spawn_ms: 19–22 ms before, 5–8 with the start snapshot moved
   * after the spawn too; bench/RESULTS.md, twelfth pass). `merge`: `to` may hold some of it already
   * (the seed after the template), and what is there stays as it is.
   */
  private async copyOwned(from: string, to: string, merge = false): Promise<void> {
    const entries = await readdir(from, { withFileTypes: true });
    // Every copy ends before a failure is thrown, so that `fill` removes a HOME nothing still writes
    // into (a sibling's copy racing that removal failed it with ENOTEMPTY, hiding the first error).
    const copies = await Promise.allSettled(entries.map((entry) => this.copyEntry(entry, join(from, entry.name), join(to, entry.name), merge)));
    const failed = copies.find((copy): copy is PromiseRejectedResult => copy.status === 'rejected');
    if (failed) throw failed.reason;
  }

  private async copyEntry(entry: Dirent, source: string, target: string, merge: boolean): Promise<void> {
    if (entry.isDirectory()) {
      const [{ mode }, fresh] = await Promise.all([lstat(source), made(mkdir(target, { mode: 0o700 }), merge)]);
      // A merge goes into a folder that is there, never through a symlink (the template's) to one elsewhere.
      if (!fresh && !(await lstat(target)).isDirectory()) return;
      await this.copyOwned(source, target, merge);
      if (!fresh) return;
      await chmod(target, mode);
    } else if (entry.isFile()) {
      if (!(await made(copyFile(source, target, constants.COPYFILE_EXCL), merge))) return;
    } else if (entry.isSymbolicLink()) {
      if (!(await made(symlink(await readlink(source), target), merge))) return;
    } else {
      throw new Error(`ASM_SANDBOX_HOME_TEMPLATE holds ${source}, which is neither a file, a folder nor a symlink, and cannot be copied into a HOME`);
    }
    await this.own(target);
  }

  /**
   * Hands an entry this process just made to the CLI's account, in-process: it is in the session's
   * folder, which is the service's alone (0700) and no sandbox has shown yet, so no other account can
   * have put a symlink in it, and it needs none of chown's care (handOver), nor a chown process on
   * every session's first run.
   */
  private async own(path: string): Promise<void> {
    if (this.account) await lchown(path, this.account.uid, this.account.gid);
  }
}

/** True once `make` made its entry; false if the entry was there already and `mayBeThere`; otherwise `make`'s error. */
function made(make: Promise<unknown>, mayBeThere: boolean): Promise<boolean> {
  return make.then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (mayBeThere && err.code === 'EEXIST') return false;
      throw err;
    },
  );
}

function component(id: string): string {
  if (!ID.test(id)) throw new AsmError('config_invalid', `"${id}" cannot name a sandbox folder`);
  return id;
}
