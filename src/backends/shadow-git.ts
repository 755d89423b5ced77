import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { WorkspaceSettings } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import { runGit } from './git.js';
import { EMPTY_WORKSPACE, workspaceFingerprint } from './workspace-fingerprint.js';

/**
 * What a run changed in its workspace, from git plumbing in a shadow repository that lives outside
 * the workspace, under ASM_SHADOW_ROOT, one per session:
 *
 *   <root>/<session id>/shadow.git   a bare repository whose work tree is given per command (the workspace)
 *
 * A snapshot is `git add -A` into the shadow repository's own index, then `git write-tree`: the
 * tree id names the workspace as it was. The index stays between snapshots, so a later snapshot
 * rehashes only the files whose stat data changed; a small workspace whose stat data did not change
 * at all since the session's last snapshot (workspace-fingerprint.ts) runs no git, nor does an empty
 * one (git's empty tree). A diff is `git diff-tree` between two trees.
 * The workspace's own `.git` is never read or written (git never adds a path named `.git`, and
 * GIT_DIR points elsewhere); the workspace's `.gitignore` files are honoured. No configuration of the
 * host or the service's user applies (GIT_CONFIG_NOSYSTEM, GIT_CONFIG_GLOBAL=/dev/null), so no
 * filter, hook or diff driver runs; the repository is the service's, out of the agent's sandbox.
 */

export interface DiffFile {
  path: string;
  /** added, modified, deleted, or type_changed (a file that became a symlink, …). */
  status: 'added' | 'modified' | 'deleted' | 'type_changed';
  /** Lines added and removed; null for a binary file. */
  additions: number | null;
  deletions: number | null;
  binary: boolean;
}

export interface DiffSummary {
  files: DiffFile[];
  /** More files changed than the summary lists (ASM_DIFF_MAX_FILES). */
  files_truncated: boolean;
  additions: number;
  deletions: number;
  changed_files: number;
}

export interface WorkspaceDiff {
  summary: DiffSummary;
  /** The unified patch (binary files as "Binary files … differ"); null when it exceeded ASM_DIFF_MAX_BYTES. */
  patch: string | null;
  /** Trees compared: the snapshot before and after. */
  from: string;
  to: string;
}

export interface ShadowLimits {
  /** Largest patch kept (bytes); a larger one is dropped and the summary alone is kept. */
  patchBytes: number;
  /** Most files listed in a summary. */
  files: number;
  /** A git command that takes longer is stopped. */
  timeoutMs: number;
  /** Most files and folders a workspace may hold for its stat fingerprint to stand in for `git add` (workspace-fingerprint.ts); 0: never. */
  statEntries: number;
}

/** The limits the operator set (ASM_DIFF_MAX_BYTES, ASM_DIFF_MAX_FILES, ASM_GIT_TIMEOUT_MS, ASM_DIFF_STAT_MAX_ENTRIES). */
export function shadowLimits(settings: WorkspaceSettings): ShadowLimits {
  return { patchBytes: settings.diffMaxBytes, files: settings.diffMaxFiles, timeoutMs: settings.gitTimeoutMs, statEntries: settings.diffStatMaxEntries };
}

/** The id of git's empty tree (SHA-1 object format, which the shadow repositories use). */
const EMPTY_TREE = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';
const STATUS: Record<string, DiffFile['status']> = { A: 'added', M: 'modified', D: 'deleted', T: 'type_changed' };
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export class ShadowRepos {
  /** Git commands of one session run one at a time: they share the shadow index. */
  private readonly chains = new Map<string, Promise<unknown>>();
  /**
   * Each session's last written tree and the index file it was written from (see `stampOf`): a
   * snapshot whose `git add` left the index file as it was has the same tree, without a `write-tree`.
   */
  private readonly written = new Map<string, { stamp: string; tree: string }>();
  /**
   * Each session's last snapshot whose workspace had a fingerprint (taken before its `git add`): a
   * snapshot that finds the same fingerprint has the same tree, without a git process.
   */
  private readonly fingerprinted = new Map<string, { workTree: string; fingerprint: string; tree: string }>();
  /** Each session's baseline tree, once written or read here. */
  private readonly baselines = new Map<string, string>();
  /** What `git init` makes, read once from a repository it made (emptyRepo). */
  private emptyLayout: Promise<RepoLayout> | null = null;

  constructor(
    readonly root: string,
    private readonly limits: ShadowLimits,
    /** The wall clock the fingerprint's entries are settled against (workspace-fingerprint.ts). */
    private readonly now: () => number = Date.now,
  ) {}

  /** The workspace as it is now: a tree id in the session's shadow repository. */
  snapshot(sessionId: string, workTree: string): Promise<string> {
    return this.serial(sessionId, async () => {
      // Walked before `git add`: whatever changes after the walk shows in the next one.
      const fingerprint = await workspaceFingerprint(workTree, this.limits.statEntries, this.now());
      const seen = this.fingerprinted.get(sessionId);
      if (fingerprint !== null && seen?.workTree === workTree && seen.fingerprint === fingerprint) return seen.tree;
      // An empty workspace is git's empty tree, which every repository knows without storing it: no git
      // process (a new session's first snapshot of an empty folder ran two, three with a process's
      // `git init`). The session's index stays as it was: the next `git add --all` brings it up to
      // date with the workspace, removals included.
      const tree = fingerprint === EMPTY_WORKSPACE ? EMPTY_TREE : await this.addAndWrite(sessionId, workTree);
      if (fingerprint === null) this.fingerprinted.delete(sessionId);
      else this.fingerprinted.set(sessionId, { workTree, fingerprint, tree });
      return tree;
    });
  }

  /** `git add` of the whole workspace into the session's index, and the index's tree. */
  private async addAndWrite(sessionId: string, workTree: string): Promise<string> {
    const gitDir = await this.repo(sessionId);
    await this.git(gitDir, workTree, ['add', '--all', '--ignore-errors', '--', '.'], { okCodes: [0, 1] });
    // A git spawn is most of a run's own cost when the run changes nothing (bench/RESULTS.md, runs).
    const last = this.written.get(sessionId);
    if (last && last.stamp === (await stampOf(gitDir))) return last.tree;
    this.written.delete(sessionId);
    const tree = (await this.git(gitDir, workTree, ['write-tree'])).trim();
    this.written.set(sessionId, { stamp: await stampOf(gitDir), tree });
    return tree;
  }

  /** What changed between two snapshots: a summary with +/- counts and the patch, bounded. */
  diff(sessionId: string, workTree: string, from: string, to: string): Promise<WorkspaceDiff> {
    // A tree id names its content: the same tree twice (a run that changed nothing) is an empty
    // diff, with no git process on the way to the run's terminal event.
    if (from === to) return Promise.resolve({ summary: summarize('', this.limits.files), patch: '', from, to });
    return this.serial(sessionId, async () => {
      const gitDir = await this.repo(sessionId);
      const base = ['diff-tree', '-r', '--no-renames', '--no-ext-diff', '--no-textconv'];
      const raw = await this.git(gitDir, workTree, [...base, '-z', '--raw', '--numstat', from, to]);
      const patch = await this.git(gitDir, workTree, [...base, '-p', '--full-index', from, to], { maxBytes: this.limits.patchBytes });
      return { summary: summarize(raw, this.limits.files), patch, from, to };
    });
  }

  /**
   * The session's baseline, the tree its whole diff starts from: the first snapshot given here (its
   * first run's start) is kept, in a file beside the repository; later ones return it.
   */
  async baseline(sessionId: string, tree: string): Promise<string> {
    // Kept once known: the file is written once and never changed while the session lasts.
    const known = this.baselines.get(sessionId);
    if (known !== undefined) return known;
    const file = join(this.folderOf(sessionId), 'baseline');
    let baseline = tree;
    // Made here too: an empty workspace's snapshot makes no repository (snapshot).
    await this.makeFolder(sessionId);
    try {
      await writeFile(file, tree, { flag: 'wx', mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      baseline = (await readFile(file, 'utf8')).trim();
    }
    this.baselines.set(sessionId, baseline);
    return baseline;
  }

  async sessions(): Promise<string[]> {
    const entries = await readdir(this.root, { withFileTypes: true }).catch(() => []);
    return entries.filter((entry) => entry.isDirectory() && ID.test(entry.name)).map((entry) => entry.name);
  }

  /**
   * Resolves once the snapshots and diffs under way (a session's priming in the background among
   * them) have ended: a closing service waits for them, as their git processes write in its folders.
   */
  async idle(): Promise<void> {
    while (this.chains.size > 0) await Promise.all([...this.chains.values()].map((chain) => chain.catch(() => undefined)));
  }

  async release(sessionId: string): Promise<void> {
    this.written.delete(sessionId);
    this.fingerprinted.delete(sessionId);
    this.baselines.delete(sessionId);
    await rm(this.folderOf(sessionId), { recursive: true, force: true });
  }

  private serial<T>(sessionId: string, work: () => Promise<T>): Promise<T> {
    const next = (this.chains.get(sessionId) ?? Promise.resolve()).catch(() => undefined).then(work);
    this.chains.set(sessionId, next);
    void next.finally(() => this.chains.get(sessionId) === next && this.chains.delete(sessionId)).catch(() => undefined);
    return next;
  }

  /**
   * The session's repository, made on its first snapshot: the folders and files of an empty one
   * (emptyRepo), written in a folder beside it and renamed into place, so a repository that is there
   * is whole. A `git init` for each session was a third git process on a new session's first run,
   * beside its agent's start (bench -- diff, new_session; bench/RESULTS.md, twenty-seventh pass).
   */
  private async repo(sessionId: string): Promise<string> {
    const gitDir = join(this.folderOf(sessionId), 'shadow.git');
    if (await isRepository(gitDir)) return gitDir;
    const layout = await this.emptyRepo();
    await this.makeFolder(sessionId);
    const staged = `${gitDir}.${randomUUID()}`;
    try {
      await writeLayout(layout, staged);
      await rename(staged, gitDir);
    } catch (err) {
      await rm(staged, { recursive: true, force: true });
      // Another process of the same root put its own there first (a rename does not replace a folder that holds files).
      if (!(await isRepository(gitDir))) throw err;
    }
    return gitDir;
  }

  /** The session's folder under the root: its shadow repository and its baseline. */
  private folderOf(sessionId: string): string {
    return join(this.root, component(sessionId));
  }

  private async makeFolder(sessionId: string): Promise<void> {
    await mkdir(this.folderOf(sessionId), { recursive: true, mode: 0o700 });
  }

  /** An empty bare repository as `git init --template=` (no hooks or samples) makes it, once per process, in a folder removed after it is read. */
  private emptyRepo(): Promise<RepoLayout> {
    const made = (this.emptyLayout ??= (async () => {
      await mkdir(this.root, { recursive: true, mode: 0o700 });
      const dir = join(this.root, `.empty-${randomUUID()}.git`);
      try {
        await this.git(null, null, ['init', '--quiet', '--bare', '--template=', dir]);
        return await readLayout(dir);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    })());
    made.catch(() => (this.emptyLayout = null));
    return made;
  }

  private git(gitDir: string | null, workTree: string | null, args: string[], opts?: { okCodes?: number[] }): Promise<string>;
  private git(gitDir: string | null, workTree: string | null, args: string[], opts: { maxBytes: number }): Promise<string | null>;
  private git(gitDir: string | null, workTree: string | null, args: string[], opts: { okCodes?: number[]; maxBytes?: number } = {}): Promise<string | null> {
    const env = { ...(gitDir && { GIT_DIR: gitDir }), ...(workTree && { GIT_WORK_TREE: workTree }) };
    return runGit(args, { ...opts, env, cwd: workTree ?? this.root, home: this.root, timeoutMs: this.limits.timeoutMs });
  }
}

function isRepository(gitDir: string): Promise<boolean> {
  return stat(join(gitDir, 'HEAD')).then(() => true, () => false);
}

/** A repository's folders, a level at a time (parents first), and its files: written in a few rounds of parallel calls (fs.cp makes a call or more per entry, one after another). */
interface RepoLayout {
  levels: string[][];
  files: Array<{ path: string; content: Buffer }>;
}

async function readLayout(dir: string): Promise<RepoLayout> {
  const levels: string[][] = [];
  const files: RepoLayout['files'] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = relative(dir, join(entry.parentPath, entry.name));
    if (entry.isDirectory()) (levels[path.split(sep).length - 1] ??= []).push(path);
    else if (entry.isFile()) files.push({ path, content: await readFile(join(dir, path)) });
    else throw new Error(`git init made ${path}, which is neither a file nor a folder`);
  }
  return { levels: levels.filter(Boolean), files };
}

/** The repository's folders and files in `target`, the service's alone. */
async function writeLayout(layout: RepoLayout, target: string): Promise<void> {
  await mkdir(target, { mode: 0o700 });
  for (const level of layout.levels) await Promise.all(level.map((folder) => mkdir(join(target, folder), { mode: 0o700 })));
  await Promise.all(layout.files.map((file) => writeFile(join(target, file.path), file.content, { mode: 0o600, flag: 'wx' })));
}

/** `--raw --numstat -z` output → the summary: raw records (`:modes shas STATUS\0path\0`), then numstat ones (`added\tdeleted\tpath\0`). */
export function summarize(raw: string, maxFiles: number): DiffSummary {
  const tokens = raw.split('\0');
  const byPath = new Map<string, DiffFile>();
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token.startsWith(':')) {
      const path = tokens[++i];
      const code = token.split(' ').at(-1)!.charAt(0);
      byPath.set(path, { path, status: STATUS[code] ?? 'modified', additions: null, deletions: null, binary: false });
      continue;
    }
    const counts = /^(\d+|-)\t(\d+|-)\t([\s\S]*)$/.exec(token);
    const file = counts && byPath.get(counts[3]);
    if (!file) continue;
    file.binary = counts[1] === '-';
    file.additions = file.binary ? null : Number(counts[1]);
    file.deletions = file.binary ? null : Number(counts[2]);
  }
  const all = [...byPath.values()];
  return {
    files: all.slice(0, maxFiles),
    files_truncated: all.length > maxFiles,
    additions: all.reduce((sum, f) => sum + (f.additions ?? 0), 0),
    deletions: all.reduce((sum, f) => sum + (f.deletions ?? 0), 0),
    changed_files: all.length,
  };
}

/**
 * The index file as it stands: git rewrites it whole (a new file renamed over the old) whenever it
 * changes anything in it, so an equal inode, size, mtime and ctime mean the same content. Another
 * process sharing ASM_SHADOW_ROOT that writes the index therefore invalidates the kept tree too.
 */
async function stampOf(gitDir: string): Promise<string> {
  const index = await stat(join(gitDir, 'index'), { bigint: true }).catch(() => null);
  return index ? `${index.ino}:${index.size}:${index.mtimeNs}:${index.ctimeNs}` : 'none';
}

function component(id: string): string {
  if (!ID.test(id)) throw new AsmError('config_invalid', `"${id}" cannot name a shadow repository folder`);
  return id;
}
