/**
 * The shadow repository that diffs a workspace (src/backends/shadow-git.ts), on real git: a folder
 * that is no repository, one that is (its .git neither diffed nor touched), symlinks and binary files,
 * and the bounds of the patch and the summary.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ShadowRepos } from '../../src/backends/shadow-git.js';
import { SETTLED_MS } from '../../src/backends/workspace-fingerprint.js';
import { logGitCommands } from '../helpers/git-log.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

type Limits = Partial<{ patchBytes: number; files: number; statEntries: number }>;

function scratch(): { workspace: string; shadow: (limits?: Limits, now?: () => number) => ShadowRepos; root: string } {
  const root = mkdtempSync(join(tmpdir(), 'asm-shadow-test-'));
  dirs.push(root);
  const workspace = join(root, 'workspace');
  mkdirSync(workspace);
  return { root, workspace, shadow: (limits = {}, now) => new ShadowRepos(join(root, 'shadow'), { patchBytes: 1024 * 1024, files: 100, timeoutMs: 30_000, statEntries: 256, ...limits }, now) };
}

/** A clock by which everything written so far has settled, as it has for a snapshot seconds later. */
const settled = () => Date.now() + SETTLED_MS + 1_000;

/** How many `git add`s ShadowRepos has run since the test began. */
function countGitAdds(): () => number {
  const log = logGitCommands();
  restores.push(() => log.restore());
  let adds = 0;
  return () => (adds += log.since().filter((line) => / add --all /.test(line)).length);
}

const restores: Array<() => void> = [];

/** git on a bare repository, its status and output. */
function git(gitDir: string, ...args: string[]): { status: number | null; stdout: string } {
  const result = spawnSync('git', [`--git-dir=${gitDir}`, ...args], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout };
}
afterEach(() => {
  for (const restore of restores.splice(0)) restore();
});

describe('ShadowRepos', () => {
  it('diffs a folder that is no repository: added, modified, deleted, binary and a symlink', async () => {
    const { workspace, shadow } = scratch();
    const repos = shadow();
    writeFileSync(join(workspace, 'keep.txt'), 'a\nb\n');
    writeFileSync(join(workspace, 'gone.txt'), 'x\n');
    writeFileSync(join(workspace, 'blob.bin'), Buffer.from([0, 1, 2]));
    const before = await repos.snapshot('ses_1', workspace);
    expect(await repos.snapshot('ses_1', workspace)).toBe(before);
    writeFileSync(join(workspace, 'keep.txt'), 'a\nB\nc\n');
    rmSync(join(workspace, 'gone.txt'));
    writeFileSync(join(workspace, 'blob.bin'), Buffer.from([0, 9, 9]));
    symlinkSync('/etc/passwd', join(workspace, 'link'));
    const after = await repos.snapshot('ses_1', workspace);
    const diff = await repos.diff('ses_1', workspace, before, after);
    expect(diff.summary).toEqual({
      files: [
        { path: 'blob.bin', status: 'modified', additions: null, deletions: null, binary: true },
        { path: 'gone.txt', status: 'deleted', additions: 0, deletions: 1, binary: false },
        { path: 'keep.txt', status: 'modified', additions: 2, deletions: 1, binary: false },
        // The link itself, as git stores it: its target is never read.
        { path: 'link', status: 'added', additions: 1, deletions: 0, binary: false },
      ],
      files_truncated: false,
      changed_files: 4,
      additions: 3,
      deletions: 2,
    });
    expect(diff.patch).toContain('+/etc/passwd');
    expect(diff.patch).not.toContain('root:');
    expect(diff.patch).toContain('Binary files a/blob.bin and b/blob.bin differ');
  });

  it('leaves the workspace\'s own repository alone and keeps its .git out of the diff', async () => {
    const { workspace, shadow, root } = scratch();
    const git = (...args: string[]) => execFileSync('git', ['-C', workspace, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { encoding: 'utf8' });
    git('init', '--quiet');
    writeFileSync(join(workspace, 'code.js'), '1\n');
    git('add', '.');
    git('commit', '--quiet', '-m', 'one');
    const indexBefore = readFileSync(join(workspace, '.git', 'index'));
    const repos = shadow();
    const before = await repos.snapshot('ses_2', workspace);
    writeFileSync(join(workspace, 'code.js'), '2\n');
    git('tag', 'moved-the-refs');
    const diff = await repos.diff('ses_2', workspace, before, await repos.snapshot('ses_2', workspace));
    expect(diff.summary.files.map((f) => f.path)).toEqual(['code.js']);
    expect(readFileSync(join(workspace, '.git', 'index'))).toEqual(indexBefore);
    expect(git('status', '--porcelain')).toBe(' M code.js\n');
    // The shadow repository is outside the workspace.
    expect(execFileSync('ls', [join(root, 'shadow', 'ses_2')], { encoding: 'utf8' })).toBe('shadow.git\n');
  });

  it('diffs a tree with itself as empty, without touching the repository', async () => {
    const { workspace, shadow, root } = scratch();
    const repos = shadow();
    writeFileSync(join(workspace, 'a.txt'), 'a\n');
    const tree = await repos.snapshot('ses_4', workspace);
    const diff = await repos.diff('ses_5', join(root, 'nowhere'), tree, tree);
    expect(diff).toEqual({ summary: { files: [], files_truncated: false, additions: 0, deletions: 0, changed_files: 0 }, patch: '', from: tree, to: tree });
    // No repository was made for ses_5: git never ran for it.
    expect(execFileSync('ls', [join(root, 'shadow')], { encoding: 'utf8' })).toBe('ses_4\n');
  });

  it('drops a patch over its bound and lists at most the configured files; keeps the first baseline', async () => {
    const { workspace, shadow } = scratch();
    const repos = shadow({ patchBytes: 2048, files: 3 });
    const before = await repos.snapshot('ses_3', workspace);
    expect(await repos.baseline('ses_3', before)).toBe(before);
    for (let i = 0; i < 5; i++) writeFileSync(join(workspace, `f${i}.txt`), 'line\n'.repeat(200));
    const after = await repos.snapshot('ses_3', workspace);
    expect(await repos.baseline('ses_3', after)).toBe(before);
    const diff = await repos.diff('ses_3', workspace, before, after);
    expect(diff.patch).toBeNull();
    expect(diff.summary).toMatchObject({ changed_files: 5, files_truncated: true, additions: 1000 });
    expect(diff.summary.files).toHaveLength(3);
  });

  it('a snapshot that finds nothing changed keeps the tree; any change, here or by another process on the same root, gives the new one', async () => {
    const { workspace, shadow } = scratch();
    const repos = shadow();
    writeFileSync(join(workspace, 'a.txt'), 'a\n');
    const first = await repos.snapshot('ses_4', workspace);
    expect(await repos.snapshot('ses_4', workspace)).toBe(first);
    // Same size, written at once: only the content tells the trees apart.
    writeFileSync(join(workspace, 'a.txt'), 'b\n');
    const second = await repos.snapshot('ses_4', workspace);
    expect(second).not.toBe(first);
    // Another ShadowRepos (another process with the same ASM_SHADOW_ROOT) moves the index on.
    writeFileSync(join(workspace, 'c.txt'), 'c\n');
    const third = await shadow().snapshot('ses_4', workspace);
    expect(third).not.toBe(second);
    expect(await repos.snapshot('ses_4', workspace)).toBe(third);
    // A fresh shadow repository of the same workspace agrees on every tree.
    expect(await shadow().snapshot('ses_fresh', workspace)).toBe(third);
  });

  it('runs no git for a snapshot of a settled workspace whose stat data did not change, and git again for any change', async () => {
    const { workspace, shadow } = scratch();
    const gitAdds = countGitAdds();
    mkdirSync(join(workspace, 'src'));
    writeFileSync(join(workspace, 'src', 'a.txt'), 'a\n');
    const repos = shadow({}, settled);
    const first = await repos.snapshot('ses_6', workspace);
    expect(gitAdds()).toBe(1);
    expect(await repos.snapshot('ses_6', workspace)).toBe(first);
    expect(await repos.snapshot('ses_6', workspace)).toBe(first);
    expect(gitAdds()).toBe(1);

    writeFileSync(join(workspace, 'src', 'b.txt'), 'b\n');
    const second = await repos.snapshot('ses_6', workspace);
    expect(gitAdds()).toBe(2);
    const diff = await repos.diff('ses_6', workspace, first, second);
    expect(diff.summary.files.map((f) => f.path)).toEqual(['src/b.txt']);
    expect(await repos.snapshot('ses_6', workspace)).toBe(second);
    expect(gitAdds()).toBe(2);
    // The fingerprint is the session's own: another session of the same workspace runs its own git.
    expect(await repos.snapshot('ses_7', workspace)).toBe(second);
    expect(gitAdds()).toBe(3);
    // A released session forgets it.
    await repos.release('ses_6');
    expect(await repos.snapshot('ses_6', workspace)).toBe(second);
    expect(gitAdds()).toBe(4);
  });

  it("takes an empty workspace for git's empty tree without a git process, and diffs from and to it", async () => {
    const { root, workspace, shadow } = scratch();
    const log = logGitCommands();
    restores.push(() => log.restore());
    const repos = shadow({}, settled);
    const empty = await repos.snapshot('ses_20', workspace);
    expect(empty).toBe('4b825dc642cb6eb9a060e54bf8d69288fbee4904');
    expect(await repos.baseline('ses_20', empty)).toBe(empty);
    expect(log.since()).toEqual([]);
    // No repository yet: the session's folder holds its baseline alone.
    expect(readdirSync(join(root, 'shadow', 'ses_20'))).toEqual(['baseline']);

    writeFileSync(join(workspace, 'a.txt'), 'a\n');
    const withA = await repos.snapshot('ses_20', workspace);
    expect(log.since().some((line) => / add --all /.test(line))).toBe(true);
    const added = await repos.diff('ses_20', workspace, empty, withA);
    expect(added.summary.files).toEqual([{ path: 'a.txt', status: 'added', additions: 1, deletions: 0, binary: false }]);
    expect(added.patch).toContain('+a');
    // Emptied: the empty tree again, without git, and the diff to it removes the file.
    rmSync(join(workspace, 'a.txt'));
    expect(await repos.snapshot('ses_20', workspace)).toBe(empty);
    expect(log.since().filter((line) => / add --all /.test(line))).toEqual([]);
    expect((await repos.diff('ses_20', workspace, withA, empty)).summary.files).toEqual([{ path: 'a.txt', status: 'deleted', additions: 0, deletions: 1, binary: false }]);
    // A file again: the index the empty snapshot left (still holding a.txt) is brought up to date.
    writeFileSync(join(workspace, 'b.txt'), 'b\n');
    const withB = await repos.snapshot('ses_20', workspace);
    expect((await repos.diff('ses_20', workspace, empty, withB)).summary.files.map((f) => f.path)).toEqual(['b.txt']);
    // A workspace holding only its own repository is empty too, as git adds nothing of it.
    rmSync(join(workspace, 'b.txt'));
    execFileSync('git', ['init', '--quiet', workspace]);
    expect(await repos.snapshot('ses_21', workspace)).toBe(empty);
  });

  it("makes a session's repository from the layout of an empty one: one git init per process, not per session", async () => {
    const { root, workspace, shadow } = scratch();
    const log = logGitCommands();
    restores.push(() => log.restore());
    const inits = () => log.since().filter((line) => / init /.test(line)).length;
    writeFileSync(join(workspace, 'a.txt'), 'a\n');
    const repos = shadow();
    const first = await repos.snapshot('ses_11', workspace);
    expect(inits()).toBe(1);
    expect(await repos.snapshot('ses_12', workspace)).toBe(first);
    expect(await repos.snapshot('ses_13', workspace)).toBe(first);
    expect(inits()).toBe(0);
    // Another process of the same root makes its own once.
    expect(await shadow().snapshot('ses_14', workspace)).toBe(first);
    expect(inits()).toBe(1);
    // Each is a repository of its own, as git sees it: a change snapshotted in one is diffed there, and is in no other.
    writeFileSync(join(workspace, 'b.txt'), 'b\n');
    const second = await repos.snapshot('ses_12', workspace);
    expect((await repos.diff('ses_12', workspace, first, second)).summary.files.map((f) => f.path)).toEqual(['b.txt']);
    const repository = (id: string) => join(root, 'shadow', id, 'shadow.git');
    expect(git(repository('ses_12'), 'cat-file', '-t', second)).toEqual({ status: 0, stdout: 'tree\n' });
    expect(git(repository('ses_13'), 'cat-file', '-t', second).status).not.toBe(0);
    expect(git(repository('ses_13'), 'rev-parse', '--is-bare-repository')).toEqual({ status: 0, stdout: 'true\n' });
    expect(git(repository('ses_13'), 'fsck', '--no-dangling').status).toBe(0);
    // Nothing is left beside the sessions' folders (the empty repository read, the folders written before their rename).
    expect(readdirSync(join(root, 'shadow')).sort()).toEqual(['ses_11', 'ses_12', 'ses_13', 'ses_14']);
    expect(readdirSync(join(root, 'shadow', 'ses_12')).sort()).toEqual(['shadow.git']);
  });

  it('is idle only once every snapshot under way has ended, those queued behind another included', async () => {
    const { root, workspace, shadow } = scratch();
    writeFileSync(join(workspace, 'a.txt'), 'a\n');
    const repos = shadow();
    const ended: string[] = [];
    // Not awaited, as a session's priming in the background is not: two for one session (the second
    // waits for the first), one for another.
    for (const id of ['ses_21', 'ses_21', 'ses_22']) void repos.snapshot(id, workspace).then(() => ended.push(id));
    await repos.idle();
    expect(ended.sort()).toEqual(['ses_21', 'ses_21', 'ses_22']);
    // Nothing is written in the root any more: it can go whole.
    rmSync(join(root, 'shadow'), { recursive: true });
    await repos.idle();
  });

  it('runs git for every snapshot of a workspace over ASM_DIFF_STAT_MAX_ENTRIES, or just written, and of a nested repository', async () => {
    const { workspace, shadow } = scratch();
    const gitAdds = countGitAdds();
    for (let i = 0; i < 3; i++) writeFileSync(join(workspace, `f${i}.txt`), `${i}\n`);
    const over = shadow({ statEntries: 2 }, settled);
    await over.snapshot('ses_8', workspace);
    await over.snapshot('ses_8', workspace);
    expect(gitAdds()).toBe(2);
    // The real clock: these files were written a moment ago.
    const now = shadow();
    await now.snapshot('ses_9', workspace);
    await now.snapshot('ses_9', workspace);
    expect(gitAdds()).toBe(4);

    // A commit in a nested repository changes the tree (git records its HEAD) and nothing else in the workspace.
    const nested = join(workspace, 'nested');
    mkdirSync(nested);
    const git = (...args: string[]) => execFileSync('git', ['-C', nested, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { encoding: 'utf8' });
    git('init', '--quiet');
    writeFileSync(join(nested, 'n.txt'), 'n\n');
    git('add', '.');
    git('commit', '--quiet', '-m', 'one');
    const repos = shadow({}, settled);
    const before = await repos.snapshot('ses_10', workspace);
    git('commit', '--quiet', '--allow-empty', '-m', 'two');
    expect(await repos.snapshot('ses_10', workspace)).not.toBe(before);
  });
});
