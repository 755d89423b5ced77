import type { Logger } from 'pino';
import type { ShadowRepos } from '../backends/shadow-git.js';
import { runLogFields } from '../logger.js';
import type { EventPayload } from '../schemas/events.js';
import type { RunRecord, Store } from '../store/types.js';

/** The workspace as a run found it: the tree its diff starts from. */
export interface RunSnapshot {
  cwd: string;
  tree: string;
  /** How long the snapshot took, for the log. */
  ms: number;
}

export interface RunDiffsDeps {
  shadow: ShadowRepos;
  store: Store;
  /** ASM_WORKSPACE_DIFFS. */
  enabled: boolean;
  log: Logger;
}

/**
 * The diff of every run, where it executes (a worker's own shadow repositories for a remote_node run):
 * a snapshot before the agent has its prompt (BackendRunSpec.workspaceSnapshot), another when the
 * run's terminal event comes, the diff between them kept with the run and the diff since the
 * session's baseline kept with the session (store `diffs`). A failing snapshot or diff is logged and
 * leaves the run without a diff: it never fails the run.
 */
export class RunDiffs {
  constructor(private readonly deps: RunDiffsDeps) {}

  /**
   * Hashes the workspace into the session's shadow index ahead of its runs (at creation, after an
   * upload), in the background: the first snapshot of a workspace hashes every file, later ones
   * only what changed (bench/RESULTS.md "diff"), so a run's own snapshot is then the cheap one.
   */
  prime(sessionId: string, cwd: string): void {
    if (!this.deps.enabled) return;
    void this.deps.shadow.snapshot(sessionId, cwd).catch((err) => this.deps.log.warn({ err, sessionId }, 'could not prime the workspace snapshot'));
  }

  async before(run: RunRecord, cwd: string): Promise<RunSnapshot | null> {
    const { shadow, enabled, log } = this.deps;
    if (!enabled) return null;
    const started = performance.now();
    try {
      const tree = await shadow.snapshot(run.session_id, cwd);
      await shadow.baseline(run.session_id, tree);
      return { cwd, tree, ms: Math.round(performance.now() - started) };
    } catch (err) {
      log.warn({ err, ...runLogFields(run) }, 'could not snapshot the workspace; the run keeps no diff');
      return null;
    }
  }

  /** Stores the run's diff and the session's; the workspace_diff payload when the run changed something. */
  async after(run: RunRecord, snapshot: RunSnapshot): Promise<EventPayload<'workspace_diff'> | null> {
    const { shadow, store, log } = this.deps;
    const started = performance.now();
    try {
      const tree = await shadow.snapshot(run.session_id, snapshot.cwd);
      const computed_at = new Date().toISOString();
      const diff = await shadow.diff(run.session_id, snapshot.cwd, snapshot.tree, tree);
      // A run that changed nothing leaves the session's diff as it was, when that was taken to this
      // same tree (the last run's end, say): two git processes fewer before its terminal event. Its
      // read goes with the run's diff's write, one round trip in Redis mode.
      const [, baseline, kept] = await Promise.all([
        store.diffs.put(run.id, { summary: diff.summary, patch: diff.patch, computed_at, trees: { from: diff.from, to: diff.to } }),
        shadow.baseline(run.session_id, snapshot.tree),
        tree === snapshot.tree ? store.diffs.get(run.session_id) : undefined,
      ]);
      if (kept?.trees?.from !== baseline || kept.trees.to !== tree) {
        const whole = await shadow.diff(run.session_id, snapshot.cwd, baseline, tree);
        await store.diffs.put(run.session_id, { summary: whole.summary, patch: whole.patch, computed_at, trees: { from: whole.from, to: whole.to } });
      }
      log.debug({ ...runLogFields(run), snapshotMs: snapshot.ms, diffMs: Math.round(performance.now() - started), files: diff.summary.changed_files }, 'workspace diff');
      return diff.summary.changed_files > 0 ? { ...diff.summary, patch_truncated: diff.patch === null } : null;
    } catch (err) {
      log.warn({ err, ...runLogFields(run) }, 'could not diff the workspace; the run keeps no diff');
      return null;
    }
  }
}
