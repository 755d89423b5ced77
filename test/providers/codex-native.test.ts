import { chmodSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative as relativePath } from 'node:path';
import { describe, expect, it } from 'vitest';
import codex from '../../src/providers/codex/index.js';
import { nativeCodex } from '../../src/providers/codex/native.js';
import { resolveLaunch } from '../../src/providers/registry.js';
import shell from '../../src/providers/shell.js';

/**
 * Codex's npm launcher skipped (src/providers/codex/native.ts): real folders laid out as npm installs
 * the package, its launcher and its platform's native binary, where the launcher looks for it.
 */

const TRIPLE = 'x86_64-unknown-linux-musl';

function file(path: string, content: string, mode = 0o755): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

/** An install under a fresh `node_modules`: the launcher, and the native binary in `platformPackage` (a folder under node_modules), if any. */
function install(platformPackage: string | null, mode = 0o755) {
  const modules = join(mkdtempSync(join(tmpdir(), 'asm-codex-npm-')), 'node_modules');
  const root = join(modules, '@openai', 'codex');
  const launcher = file(join(root, 'bin', 'codex.js'), '#!/usr/bin/env node\nprocess.exit(9);\n');
  let native: string | undefined;
  if (platformPackage !== null) {
    const at = join(modules, platformPackage);
    file(join(at, 'package.json'), JSON.stringify({ name: '@openai/codex-linux-x64', version: '0.0.0' }), 0o644);
    native = file(join(at, 'vendor', TRIPLE, 'bin', 'codex'), '#!/bin/sh\nexit 0\n', mode);
  }
  return { modules, root, launcher, native };
}

describe("codex's npm launcher, skipped", () => {
  it('finds the native binary in the platform package beside the launcher, with the launcher\'s variables', async () => {
    const { root, launcher, native } = install('@openai/codex-linux-x64');
    expect(await nativeCodex(launcher, 'linux', 'x64')).toEqual({ binary: native, env: { CODEX_MANAGED_PACKAGE_ROOT: root, CODEX_MANAGED_BY_NPM: '1' } });
  });

  it('finds it nested under the launcher\'s own package, and in that package\'s vendor folder', async () => {
    const nested = install('@openai/codex/node_modules/@openai/codex-linux-x64');
    expect((await nativeCodex(nested.launcher, 'linux', 'x64'))?.binary).toBe(nested.native);
    const own = install(null);
    const vendored = file(join(own.root, 'vendor', TRIPLE, 'bin', 'codex'), '#!/bin/sh\n');
    expect((await nativeCodex(own.launcher, 'linux', 'x64'))?.binary).toBe(vendored);
  });

  it('leaves the launcher to run where there is no native binary to start', async () => {
    expect(await nativeCodex(install(null).launcher, 'linux', 'x64')).toBeUndefined();
    // There, but not executable.
    expect(await nativeCodex(install('@openai/codex-linux-x64', 0o644).launcher, 'linux', 'x64')).toBeUndefined();
    // A platform the launcher has no binary for here (the package is linux x64's).
    expect(await nativeCodex(install('@openai/codex-linux-x64').launcher, 'linux', 'arm64')).toBeUndefined();
    expect(await nativeCodex(install('@openai/codex-linux-x64').launcher, 'win32', 'x64')).toBeUndefined();
  });

  it('takes only the npm package\'s launcher', async () => {
    const { modules } = install('@openai/codex-linux-x64');
    const other = file(join(modules, '@openai', 'other', 'bin', 'codex.js'), '#!/usr/bin/env node\n');
    expect(await nativeCodex(other, 'linux', 'x64')).toBeUndefined();
    expect(await nativeCodex('/bin/sh', 'linux', 'x64')).toBeUndefined();
  });
});

describe('resolveLaunch', () => {
  const here = `${process.platform} ${process.arch}` === 'linux x64';

  it.runIf(here)('follows a name on PATH through its link to the launcher, and starts what the launcher would', async () => {
    const { root, launcher, native } = install('@openai/codex-linux-x64');
    const bin = mkdtempSync(join(tmpdir(), 'asm-codex-bin-'));
    symlinkSync(launcher, join(bin, 'codex'));
    expect(await resolveLaunch(codex, 'codex', `/nonexistent:${bin}`)).toEqual({ binary: native, env: { CODEX_MANAGED_PACKAGE_ROOT: root, CODEX_MANAGED_BY_NPM: '1' } });
    expect(await resolveLaunch(codex, join(bin, 'codex'), '')).toMatchObject({ binary: native });
  });

  it('starts the binary as configured otherwise', async () => {
    // Not a launcher; not found (its spawn reports that); a provider that knows no launcher.
    expect(await resolveLaunch(codex, '/bin/sh', '')).toEqual({ binary: '/bin/sh', env: {} });
    expect(await resolveLaunch(codex, 'codex', '/nonexistent')).toEqual({ binary: 'codex', env: {} });
    // A relative path names a file from the run's directory, which this process does not look in.
    const relative = relativePath(process.cwd(), install('@openai/codex-linux-x64').launcher);
    expect(await resolveLaunch(codex, relative, '')).toEqual({ binary: relative, env: {} });
    const { launcher } = install('@openai/codex-linux-x64');
    expect(await resolveLaunch(shell, launcher, '')).toEqual({ binary: launcher, env: {} });
    // A provider's lookup that fails leaves the binary as configured, never failing the run's start.
    const failing = { ...codex, directLaunch: () => Promise.reject(new Error('unreadable')) };
    expect(await resolveLaunch(failing, launcher, '')).toEqual({ binary: launcher, env: {} });
  });
});
