/**
 * Workspace diff benchmark: what the diff of a run costs on a large workspace. A tree of 10,000 small
 * files (200 folders of 50) is snapshotted cold (the session's first run: every file hashed), then
 * warm with nothing changed (each later run's start: the shadow index's stat data spares the
 * hashing), then after a run that changed 10 files and added 10 (the end of a run: snapshot and
 * diff). Prints one JSON line with the times in ms; progress goes to stderr.
 *
 * Usage: npm run bench -- diff [--files N]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config.js';
import { ShadowRepos } from '../src/backends/shadow-git.js';
import { logger, numberFlag, round } from './asm-server.js';

const log = logger('diff');
const PER_FOLDER = 50;

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
    // The service's default bound on the stat walk (ASM_DIFF_STAT_MAX_ENTRIES), which a tree this large exceeds: git does every snapshot.
    const { diffStatMaxEntries } = loadConfig({ ASM_WORKSPACE_ROOT: workspace }).workspaces;
    const shadow = new ShadowRepos(join(scratch, 'shadow'), { patchBytes: 1024 * 1024, files: 1_000, timeoutMs: 600_000, statEntries: diffStatMaxEntries });
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
        cpus: cpus().length,
        load: round(loadavg()[0]),
      })}\n`,
    );
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
