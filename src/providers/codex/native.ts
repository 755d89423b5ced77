import { access, constants } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import type { DirectLaunch } from '../types.js';

/**
 * codex's npm package starts the CLI through `bin/codex.js`, a Node script that finds the platform's
 * native binary (in the optional dependency `@openai/codex-<platform>-<arch>`), sets two variables
 * and starts it: on this project's hosts 120 ms and a 44 MB Node process a start, and on Node before
 * 22.15 (no `process.execve`) that process stays beside the CLI for the whole run (bench/RESULTS.md,
 * thirty-third pass). A run starts the native binary itself, with the launcher's variables.
 */

/** The native binary's target triple, by `${platform} ${arch}`, as the launcher names them. */
const TARGETS: Readonly<Record<string, string>> = {
  'linux x64': 'x86_64-unknown-linux-musl',
  'linux arm64': 'aarch64-unknown-linux-musl',
  'darwin x64': 'x86_64-apple-darwin',
  'darwin arm64': 'aarch64-apple-darwin',
};

const LAUNCHER = join(`${sep}@openai`, 'codex', 'bin', 'codex.js');

/**
 * The native binary that `launcher` (a real path: links followed) would start, found where the
 * launcher looks for it, with the variables it would set; undefined where `launcher` is not the npm
 * package's launcher, or the binary for this platform is not there to execute (the launcher then runs,
 * and reports that itself).
 */
export async function nativeCodex(launcher: string, platform = process.platform, arch = process.arch): Promise<DirectLaunch | undefined> {
  const target = TARGETS[`${platform} ${arch}`];
  if (!launcher.endsWith(LAUNCHER) || target === undefined) return undefined;
  const packageRoot = dirname(dirname(launcher));
  let vendor = join(packageRoot, 'vendor');
  try {
    vendor = join(dirname(createRequire(launcher).resolve(`@openai/codex-${platform}-${arch}/package.json`)), 'vendor');
  } catch {
    // Not installed as a dependency: the launcher looks in its own package's vendor folder then.
  }
  const binary = join(vendor, target, 'bin', 'codex');
  const runnable = await access(binary, constants.X_OK).then(
    () => true,
    () => false,
  );
  // CODEX_MANAGED_BY_NPM, as the launcher sets for an npm install: which package manager installed the
  // CLI changes only the update command it suggests and what `codex doctor` says, neither part of a run.
  return runnable ? { binary, env: { CODEX_MANAGED_PACKAGE_ROOT: packageRoot, CODEX_MANAGED_BY_NPM: '1' } } : undefined;
}
