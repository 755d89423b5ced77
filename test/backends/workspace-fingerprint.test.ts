/**
 * A workspace's stat fingerprint (src/backends/workspace-fingerprint.ts), on a real file system: what
 * changes it, what it leaves out, and where it gives up so that git looks instead. Files written here
 * are new, so most walks are given a clock SETTLED_MS ahead, as a walk seconds later would see them.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SETTLED_MS, workspaceFingerprint } from '../../src/backends/workspace-fingerprint.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function workspace(): string {
  const root = mkdtempSync(join(tmpdir(), 'asm-fingerprint-test-'));
  dirs.push(root);
  mkdirSync(join(root, 'src'));
  writeFileSync(join(root, 'src', 'a.txt'), 'aaa\n');
  writeFileSync(join(root, 'b.txt'), 'bbb\n');
  return root;
}

/** A walk as it would be once every entry written so far has settled. */
const later = (root: string, maxEntries = 256) => workspaceFingerprint(root, maxEntries, Date.now() + SETTLED_MS + 1_000);

describe('workspaceFingerprint', () => {
  it('is the same for a workspace left alone, and changes with any add, removal, rename, write, mode or link', async () => {
    const root = workspace();
    const first = await later(root);
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    expect(await later(root)).toBe(first);

    const changes: Array<[string, () => void]> = [
      ['a file added in a subfolder', () => writeFileSync(join(root, 'src', 'new.txt'), 'x')],
      ['a file removed', () => unlinkSync(join(root, 'src', 'new.txt'))],
      ['a file renamed', () => renameSync(join(root, 'b.txt'), join(root, 'c.txt'))],
      ['an empty folder added', () => mkdirSync(join(root, 'empty'))],
      ['its mode changed', () => chmodSync(join(root, 'c.txt'), 0o755)],
      ['a link added', () => symlinkSync('c.txt', join(root, 'link'))],
      [
        'a link pointed elsewhere',
        () => {
          unlinkSync(join(root, 'link'));
          symlinkSync('src', join(root, 'link'));
        },
      ],
    ];
    const seen = new Set([first]);
    for (const [change, make] of changes) {
      make();
      const next = await later(root);
      expect(next, change).not.toBeNull();
      expect(seen.has(next!), change).toBe(false);
      seen.add(next!);
    }
  });

  it('changes when a file is rewritten with content of the same size', async () => {
    const root = workspace();
    // An old mtime: the rewrite's own is then another, whatever the clock's tick.
    utimesSync(join(root, 'b.txt'), new Date('2020-01-01'), new Date('2020-01-01'));
    const before = await later(root);
    writeFileSync(join(root, 'b.txt'), 'BBB\n');
    expect(await later(root)).not.toBe(before);
  });

  it('does not follow links: what a link points to outside is not walked', async () => {
    const root = workspace();
    const outside = mkdtempSync(join(tmpdir(), 'asm-fingerprint-outside-'));
    dirs.push(outside);
    symlinkSync(outside, join(root, 'out'));
    const before = await later(root);
    writeFileSync(join(outside, 'elsewhere.txt'), 'x');
    expect(await later(root)).toBe(before);
  });

  it('leaves the top .git out, and gives up at a nested repository', async () => {
    const root = workspace();
    execFileSync('git', ['init', '--quiet', root]);
    const before = await later(root);
    writeFileSync(join(root, '.git', 'description'), 'changed');
    mkdirSync(join(root, '.git', 'more'));
    expect(await later(root)).toBe(before);

    // git add records a nested repository as its HEAD commit, which changes under its .git alone.
    execFileSync('git', ['init', '--quiet', join(root, 'src', 'nested')]);
    expect(await later(root)).toBeNull();
    rmSync(join(root, 'src', 'nested'), { recursive: true });
    // A .git file (a worktree's, a submodule's) points elsewhere: the same.
    writeFileSync(join(root, 'src', '.git'), 'gitdir: /elsewhere\n');
    expect(await later(root)).toBeNull();
  });

  it('gives up past its bound of files and folders, at 0, on an entry changed lately, and on a folder it cannot read', async () => {
    const root = workspace();
    // src, src/a.txt, b.txt.
    expect(await later(root, 3)).not.toBeNull();
    expect(await later(root, 2)).toBeNull();
    expect(await later(root, 0)).toBeNull();
    // Just written: a change within the same tick of the file system's clock could go unseen.
    expect(await workspaceFingerprint(root, 256)).toBeNull();
    expect(await workspaceFingerprint(root, 256, Date.now() + SETTLED_MS + 1_000)).not.toBeNull();
    // An mtime in the future (set by the agent, say) is never settled.
    utimesSync(join(root, 'b.txt'), new Date(), new Date(Date.now() + 3_600_000));
    expect(await later(root)).toBeNull();
    expect(await later(join(root, 'missing'))).toBeNull();
    expect(await later(join(root, 'src', 'a.txt'))).toBeNull();
  });
});
