/**
 * A session's sandbox folders (src/backends/sandbox-dirs.ts): HOME a copy of the template and TMP,
 * both handed to the account the CLI runs as, every entry of the copy included and a symlink's target
 * never; made once, ahead of the run (Sandbox.prepare) or by it. The hand-over needs the service to be root.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SandboxDirs } from '../../src/backends/sandbox-dirs.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const ACCOUNT = { uid: 65534, gid: 65534, chown: '/usr/bin/chown' };
const root = process.getuid?.() === 0;

function scratch(): { template: string; sandboxRoot: string; outside: string } {
  const dir = mkdtempSync(join(tmpdir(), 'asm-sandbox-dirs-test-'));
  dirs.push(dir);
  const template = join(dir, 'template');
  mkdirSync(join(template, '.codex', 'skills'), { recursive: true });
  writeFileSync(join(template, '.codex', 'config.toml'), 'model = "m"\n');
  writeFileSync(join(template, '.codex', 'skills', 'a.md'), 'a\n');
  const outside = join(dir, 'outside.txt');
  writeFileSync(outside, 'the service\'s\n');
  symlinkSync(outside, join(template, 'link'));
  return { template, sandboxRoot: join(dir, 'sandbox'), outside };
}

describe('SandboxDirs', () => {
  it.runIf(root)('copies the template into a fresh HOME and hands every entry, not a link\'s target, to the account', async () => {
    const { template, sandboxRoot, outside } = scratch();
    const sandbox = new SandboxDirs(sandboxRoot, ACCOUNT, template);
    await sandbox.init();
    const { home, tmp } = await sandbox.folders('ses_1');
    for (const path of [home, tmp, join(home, '.codex'), join(home, '.codex', 'config.toml'), join(home, '.codex', 'skills'), join(home, '.codex', 'skills', 'a.md'), join(home, 'link')]) {
      expect(lstatSync(path), path).toMatchObject({ uid: 65534, gid: 65534 });
    }
    expect(readFileSync(join(home, '.codex', 'config.toml'), 'utf8')).toBe('model = "m"\n');
    expect(readlinkSync(join(home, 'link'))).toBe(outside);
    expect(statSync(outside).uid).toBe(0);
    // The session's folder stays the service's alone.
    expect(lstatSync(sandbox.sessionDir('ses_1')).uid).toBe(0);
    expect(lstatSync(sandbox.sessionDir('ses_1')).mode & 0o077).toBe(0);
  });

  it('copies each file and folder with its mode, and names a template entry it cannot copy', async () => {
    const { template, sandboxRoot } = scratch();
    writeFileSync(join(template, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(template, '.netrc'), 'machine m\n', { mode: 0o600 });
    chmodSync(join(template, '.codex', 'skills'), 0o750);
    const sandbox = new SandboxDirs(sandboxRoot, root ? ACCOUNT : null, template);
    await sandbox.init();
    const { home } = await sandbox.folders('ses_3');
    const mode = (path: string) => lstatSync(path).mode & 0o7777;
    for (const path of ['run.sh', '.netrc', '.codex', join('.codex', 'skills'), join('.codex', 'skills', 'a.md')]) {
      expect(mode(join(home, path)), path).toBe(mode(join(template, path)));
    }
    expect(mode(join(home, '.codex', 'skills'))).toBe(0o750);
    expect(readFileSync(join(home, 'run.sh'), 'utf8')).toBe('#!/bin/sh\n');

    execFileSync('mkfifo', [join(template, '.codex', 'pipe')]);
    await expect(sandbox.folders('ses_4')).rejects.toThrow(`ASM_SANDBOX_HOME_TEMPLATE holds ${join(template, '.codex', 'pipe')}`);
    // Nothing half-copied is kept: the next run copies again.
    rmSync(join(template, '.codex', 'pipe'));
    writeFileSync(join(template, 'added'), 'later\n');
    expect(readFileSync(join((await sandbox.folders('ses_4')).home, 'added'), 'utf8')).toBe('later\n');
  });

  it('makes the folders once: a second call (a run after prepare) waits for the same ones, and a second process keeps what is there', async () => {
    const { template, sandboxRoot } = scratch();
    const first = new SandboxDirs(sandboxRoot, root ? ACCOUNT : null, template);
    await first.init();
    const made = first.folders('ses_2');
    expect(first.folders('ses_2')).toBe(made);
    const { home } = await made;
    writeFileSync(join(home, 'conversation'), 'kept\n');
    // Another process (a restart): the HOME is there, with what the CLI left in it.
    const second = new SandboxDirs(sandboxRoot, root ? ACCOUNT : null, template);
    expect(await second.folders('ses_2')).toEqual(await made);
    expect(readFileSync(join(home, 'conversation'), 'utf8')).toBe('kept\n');
  });

  it('adds a seed\'s files to a new HOME after the template, keeps the template\'s, and never writes through its symlinks', async () => {
    const { template, sandboxRoot } = scratch();
    const seed = join(sandboxRoot, '..', 'seed');
    mkdirSync(join(seed, '.codex'), { recursive: true, mode: 0o700 });
    writeFileSync(join(seed, '.codex', 'config.toml'), 'the seed\'s\n');
    writeFileSync(join(seed, '.codex', 'state.sqlite'), 'schema\n', { mode: 0o644 });
    mkdirSync(join(seed, '.gemini'), { mode: 0o700 });
    writeFileSync(join(seed, '.gemini', 'db'), 'gemini\n');
    // The template's .gemini is a symlink to a folder elsewhere: the seed's file must not land there.
    const elsewhere = join(sandboxRoot, '..', 'elsewhere');
    mkdirSync(elsewhere);
    symlinkSync(elsewhere, join(template, '.gemini'));
    const sandbox = new SandboxDirs(sandboxRoot, root ? ACCOUNT : null, template);
    await sandbox.init();
    mkdirSync(join(sandboxRoot, '.home-seeds'));
    const { home } = await sandbox.folders('ses_5', async () => seed);
    expect(readFileSync(join(home, '.codex', 'config.toml'), 'utf8')).toBe('model = "m"\n');
    expect(readFileSync(join(home, '.codex', 'skills', 'a.md'), 'utf8')).toBe('a\n');
    expect(readFileSync(join(home, '.codex', 'state.sqlite'), 'utf8')).toBe('schema\n');
    expect(lstatSync(join(home, '.codex', 'state.sqlite')).mode & 0o777).toBe(0o644);
    if (root) expect(lstatSync(join(home, '.codex', 'state.sqlite')).uid).toBe(65534);
    expect(readlinkSync(join(home, '.gemini'))).toBe(elsewhere);
    expect(existsSync(join(elsewhere, 'db'))).toBe(false);
    // A seed that cannot be had leaves the template's copy.
    const plain = await sandbox.folders('ses_6', async () => {
      throw new Error('no seed');
    });
    expect(existsSync(join(plain.home, '.codex', 'state.sqlite'))).toBe(false);
    // The seeds' folder is not a session's.
    expect((await sandbox.sessions()).sort()).toEqual(['ses_5', 'ses_6']);
  });
});
