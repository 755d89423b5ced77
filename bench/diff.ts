/**
 * Workspace diff benchmark: what the diff of a run costs on a large workspace. A tree of 10,000 small
 * files (200 folders of 50) is snapshotted cold (the session's first run: every file hashed), then
 * warm with nothing changed (each later run's start: the shadow index's stat data spares the
 * hashing), then after a run that changed 10 files and added 10 (the end of a run: snapshot and
 * diff). Then, on a small tree of ASM_DIFF_STAT_MAX_ENTRIES files and folders (the most a snapshot
 * from stat data takes, src/backends/workspace-fingerprint.ts), what that stat walk costs (its time,
 * and the CPU of this process, which is the service's event loop) against the `git add` it spares,
 * alternated; and a new session's first snapshot of that tree (its shadow repository made, then
 * `git add` and `write-tree`) against the three git commands of a `git init` and a snapshot, run
 * alone, alternated (`new_session`). Prints one JSON line with the times in ms; progress goes to stderr.
 *
 * Usage: npm run bench -- diff [--files N]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config.js';
import { runGit } from '../src/backends/git.js';
import { ShadowRepos } from '../src/backends/shadow-git.js';
import { SETTLED_MS, workspaceFingerprint } from '../src/backends/workspace-fingerprint.js';
import { logger, median, numberFlag, round } from './asm-server.js';

const log = logger('diff');
const PER_FOLDER = 50;

/** The shadow repositories' limits here: a patch and a file list as large as a run's, and ten minutes for a git command. */
const limits = (statEntries: number) => ({ patchBytes: 1024 * 1024, files: 1_000, timeoutMs: 600_000, statEntries });

const roundedMedian = (values: number[]) => round(median(values));

async function timed<T>(work: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now();
  const value = await work();
  return [value, performance.now() - started];
}

export async function run(args: string[]): Promise<void> {
  // The run below changes a file in each of the first 10 folders.
  const files = numberFlag(args, 'files', 10_000, 10 * PER_FOLDER);
  const scratch = mkdtempSync(join(tmpdir(), 'asm-bench-diff-'));
  const workspace = join(scratch, 'workspace');
  try {
    log(`writing ${files} files`);
    for (let i = 0; i < files; i++) {
      const folder = join(workspace, `dir-${Math.floor(i / PER_FOLDER)}`);
      if (i % PER_FOLDER === 0) mkdirSync(folder, { recursive: true });
      writeFileSync(join(folder, `file-${i}.ts`), `export const value${i} = ${i};\n// line two\n// line three\n`);
    }
    // The bound on the stat walk (ASM_DIFF_STAT_MAX_ENTRIES, as the service reads it), which a tree this large exceeds: git does every snapshot.
    const { diffStatMaxEntries } = loadConfig({ ...process.env, ASM_WORKSPACE_ROOT: workspace }).workspaces;
    const shadow = new ShadowRepos(join(scratch, 'shadow'), limits(diffStatMaxEntries));
    const session = 'ses_bench';
    log('cold snapshot');
    const [base, coldMs] = await timed(() => shadow.snapshot(session, workspace));
    log('warm snapshot, nothing changed');
    const [same, warmMs] = await timed(() => shadow.snapshot(session, workspace));
    if (same !== base) throw new Error('an unchanged workspace gave another tree');
    for (let i = 0; i < 10; i++) {
      writeFileSync(join(workspace, `dir-${i}`, `file-${i * PER_FOLDER}.ts`), `export const changed = ${i};\n`);
      writeFileSync(join(workspace, `dir-${i}`, `new-${i}.ts`), `export const added = ${i};\n`);
    }
    log('snapshot after a run that changed 10 files and added 10');
    const [after, endSnapshotMs] = await timed(() => shadow.snapshot(session, workspace));
    const [diff, diffMs] = await timed(() => shadow.diff(session, workspace, base, after));
    if (diff.summary.changed_files !== 20) throw new Error(`expected 20 changed files, got ${diff.summary.changed_files}`);
    log(`a small tree of ${diffStatMaxEntries} entries: the stat walk against git add, ${SMALL_ROUNDS} rounds`);
    const small = await smallTree(join(scratch, 'small'), join(scratch, 'small-shadow'), diffStatMaxEntries);
    log(`a new session's first snapshot of that tree against git init, add and write-tree, ${SMALL_ROUNDS} rounds`);
    const newSession = await firstSnapshots(join(scratch, 'small'), join(scratch, 'first-shadow'), join(scratch, 'first-git'), diffStatMaxEntries);
    process.stdout.write(
      `${JSON.stringify({
        bench: 'diff',
        files,
        cold_snapshot_ms: round(coldMs),
        warm_snapshot_ms: round(warmMs),
        end_snapshot_ms: round(endSnapshotMs),
        diff_ms: round(diffMs),
        run_end_ms: round(endSnapshotMs + diffMs),
        changed_files: diff.summary.changed_files,
        patch_bytes: diff.patch?.length ?? null,
        small_tree: small,
        new_session: newSession,
        cpus: cpus().length,
        load: round(loadavg()[0]),
      })}\n`,
    );
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

const SMALL_ROUNDS = 21;

/**
 * A tree of `entries` files and folders (folders of 15 files), snapshotted once, then alternately
 * walked for its stat fingerprint and snapshotted by git (statEntries 0: `git add`, the tree
 * unchanged): the medians, and the walk's CPU.
 */
async function smallTree(workspace: string, shadowRoot: string, entries: number): Promise<Record<string, number>> {
  for (let made = 0, folder = -1; made < entries; made++) {
    if (made % 16 === 0) mkdirSync(join(workspace, `dir-${++folder}`), { recursive: true });
    else writeFileSync(join(workspace, `dir-${folder}`, `file-${made}.ts`), `export const value${made} = ${made};\n`);
  }
  const git = new ShadowRepos(shadowRoot, limits(0));
  await git.snapshot('ses_small', workspace);
  // Just written: the walk is told the time of a snapshot seconds later (SETTLED_MS).
  const later = () => Date.now() + SETTLED_MS + 1_000;
  const walkMs: number[] = [];
  const walkCpuMs: number[] = [];
  const gitMs: number[] = [];
  for (let i = 0; i < SMALL_ROUNDS; i++) {
    const cpu = process.cpuUsage();
    const [fingerprint, ms] = await timed(() => workspaceFingerprint(workspace, entries, later()));
    const used = process.cpuUsage(cpu);
    if (fingerprint === null) throw new Error('the small tree got no fingerprint');
    walkMs.push(ms);
    walkCpuMs.push((used.user + used.system) / 1000);
    gitMs.push((await timed(() => git.snapshot('ses_small', workspace)))[1]);
  }
  return { entries, walk_ms: roundedMedian(walkMs), walk_cpu_ms: roundedMedian(walkCpuMs), git_add_ms: roundedMedian(gitMs) };
}

/**
 * A new session's first snapshot of `workspace` through ShadowRepos (each round a session of its
 * own), alternated with what it would be made of with git alone: `git init --bare`, then `git add`
 * and `git write-tree` into that repository. The medians (ms), and that both name the same tree.
 */
async function firstSnapshots(workspace: string, shadowRoot: string, gitRoot: string, statEntries: number): Promise<Record<string, number>> {
  const shadow = new ShadowRepos(shadowRoot, limits(statEntries));
  mkdirSync(gitRoot, { recursive: true });
  // The first session of a process makes the empty repository the others are written from: untimed, as the first round of each.
  await shadow.snapshot('ses_first', workspace);
  const asmMs: number[] = [];
  const gitMs: number[] = [];
  for (let i = 0; i < SMALL_ROUNDS; i++) {
    const [tree, ms] = await timed(() => shadow.snapshot(`ses_${i}`, workspace));
    asmMs.push(ms);
    const gitDir = join(gitRoot, `repo-${i}.git`);
    const git = (args: string[]) => runGit(args, { env: { GIT_DIR: gitDir, GIT_WORK_TREE: workspace }, cwd: workspace, home: gitRoot, timeoutMs: 600_000 });
    const [alone, aloneMs] = await timed(async () => {
      await runGit(['init', '--quiet', '--bare', gitDir], { cwd: gitRoot, home: gitRoot, timeoutMs: 600_000 });
      await git(['add', '--all', '--ignore-errors', '--', '.']);
      return (await git(['write-tree'])).trim();
    });
    if (alone !== tree) throw new Error(`the first snapshot gave ${tree}, git alone ${alone}`);
    gitMs.push(aloneMs);
  }
  return { entries: statEntries, asm_ms: roundedMedian(asmMs), git_init_add_write_tree_ms: roundedMedian(gitMs) };
}
