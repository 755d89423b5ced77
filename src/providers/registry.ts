import { execFile } from 'node:child_process';
import { access, constants, readdir, realpath } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { AsmError } from '../errors/kinds.js';
import { buildCliEnv } from './env.js';
import type { DirectLaunch, ProviderDefinition } from './types.js';

/**
 * Providers are discovered, not listed: every module in this folder except the ones named below
 * (the contract, this registry, common.ts with the helpers providers share, env.ts with the
 * environment a provider's CLI gets, permission-modes.ts and agent-options.ts with the vocabulary of
 * the session options, mcp.ts with what their MCP configurations share), and every subfolder with
 * an index module, default-exports a ProviderDefinition, so adding a provider is adding one file or one folder. Discovery reads the
 * folder this module is in, which is src/providers/ under vitest and tsx (claude/index.ts, shell.ts),
 * and dist/providers/ after the build (claude/index.js, shell.js).
 */

const NOT_PROVIDERS = new Set(['types', 'registry', 'index', 'common', 'env', 'permission-modes', 'agent-options', 'mcp']);

let loaded: Promise<Map<string, ProviderDefinition>> | null = null;

/** Every provider by name; discovered once, then cached. */
export function loadProviders(): Promise<Map<string, ProviderDefinition>> {
  loaded ??= discoverProviders().catch((err: unknown) => {
    loaded = null; // a fixed file can be picked up on the next call
    throw err;
  });
  return loaded;
}

async function discoverProviders(): Promise<Map<string, ProviderDefinition>> {
  const folder = new URL('.', import.meta.url);
  const files = (await providerModules(folder)).sort();
  const providers = new Map<string, ProviderDefinition>();
  for (const file of files) {
    const module = (await import(new URL(file, folder).href)) as { default?: unknown };
    const definition = module.default;
    if (!isProviderDefinition(definition)) {
      throw new Error(`providers/${file} must default-export a ProviderDefinition`);
    }
    if (providers.has(definition.name)) throw new Error(`provider "${definition.name}" is defined twice (providers/${file})`);
    providers.set(definition.name, definition);
  }
  return providers;
}

/** The provider modules of the folder, relative to it: `shell.ts`, or `claude/index.ts` for a provider folder. */
async function providerModules(folder: URL): Promise<string[]> {
  const modules: string[] = [];
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      const index = (await readdir(new URL(`${entry.name}/`, folder))).find((file) => /^index\.(?:js|ts)$/.test(file));
      if (index) modules.push(`${entry.name}/${index}`);
    } else if (isProviderModule(entry.name)) {
      modules.push(entry.name);
    }
  }
  return modules;
}

function isProviderModule(file: string): boolean {
  if (file.endsWith('.d.ts')) return false;
  const match = /^(.+)\.(?:js|ts)$/.exec(file);
  return match !== null && !NOT_PROVIDERS.has(match[1]);
}

function isProviderDefinition(value: unknown): value is ProviderDefinition {
  const candidate = value as Partial<ProviderDefinition> | undefined;
  return typeof candidate?.name === 'string' && typeof candidate.create === 'function';
}

/** The binary to run: the operator's ASM_<NAME>_BIN if set, else the provider's default (looked up on PATH). */
export function resolveBinary(definition: ProviderDefinition, binaries: Record<string, string>): string {
  return binaries[definition.name] ?? definition.defaultBinary;
}

/** The environment variable that overrides a provider's binary. */
export function binaryVariable(definition: ProviderDefinition): string {
  return `ASM_${definition.name.toUpperCase()}_BIN`;
}

/**
 * Where each binary was last found, by PATH, and when it was last seen there. A binary seen within
 * FOUND_FRESH_MS is taken as still there without a look; an older answer is checked there first (one
 * `access`) before the whole PATH is searched again (six folders for `sh` on a Debian PATH). A create or
 * a submit asks at each request, and the look was the largest file-system cost of a create
 * (bench/RESULTS.md issue 14). A binary removed inside that window is still refused, only later: its
 * spawn fails with ENOENT, which the run reports as `cli_not_found` (backends/subprocess.ts).
 */
const lastFound = new Map<string, { file: string; seenAt: number }>();
const FOUND_FRESH_MS = 1_000;

/** Whether `binary` can be started with this PATH: an executable file at that path, or in one of PATH's folders. */
export async function findBinary(binary: string, path: string): Promise<boolean> {
  return (await locateBinary(binary, path)) !== undefined;
}

/** The executable file that `binary` names with this PATH (as findBinary looks), or undefined. */
async function locateBinary(binary: string, path: string): Promise<string | undefined> {
  const key = `${binary}\0${path}`;
  const known = lastFound.get(key);
  const now = performance.now();
  if (known && now - known.seenAt < FOUND_FRESH_MS) return known.file;
  if (known && (await executable(known.file))) {
    known.seenAt = now;
    return known.file;
  }
  const candidates = binary.includes('/') ? [binary] : path.split(delimiter).filter(Boolean).map((dir) => join(dir, binary));
  for (const candidate of candidates) {
    if (await executable(candidate)) {
      lastFound.set(key, { file: candidate, seenAt: now });
      return candidate;
    }
  }
  lastFound.delete(key);
  return undefined;
}

/**
 * What a local run of the provider starts for `binary` (resolveBinary's) with this PATH: the program
 * its launcher would start, where the provider knows one (ProviderDefinition.directLaunch), else the
 * binary itself, with no variables. Never rejects: a binary that is not found, or a launcher whose
 * program is not there, is started as configured, and its spawn reports what is wrong. A relative
 * path is started as configured too: the spawn finds it from the run's directory, not this process's.
 */
export async function resolveLaunch(definition: ProviderDefinition, binary: string, path: string): Promise<DirectLaunch> {
  const configured = { binary, env: {} };
  if (!definition.directLaunch || (binary.includes('/') && !isAbsolute(binary))) return configured;
  const file = await locateBinary(binary, path);
  if (file === undefined) return configured;
  const launch = await realpath(file)
    .then((real) => definition.directLaunch!(real))
    .catch(() => undefined);
  return launch ?? configured;
}

function executable(file: string): Promise<boolean> {
  return access(file, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** The providers among these whose CLI this process cannot start (what a node reports as `missing_clis`). */
export async function missingClisOf(definitions: ProviderDefinition[], binaries: Record<string, string>): Promise<Array<{ provider: string; binary: string }>> {
  const checked = await Promise.all(
    definitions.map(async (definition) => {
      const binary = resolveBinary(definition, binaries);
      return { provider: definition.name, binary, found: await findBinary(binary, process.env.PATH ?? '') };
    }),
  );
  return checked.filter((c) => !c.found).map(({ provider, binary }) => ({ provider, binary }));
}

/** A provider whose CLI is missing `where` ("on this server", "on node w1"): what is missing, and how to fix it. */
export function cliNotFound(definition: ProviderDefinition, binary: string, where: string): AsmError {
  const variable = binaryVariable(definition);
  return new AsmError(
    'cli_not_found',
    `provider: the ${definition.name} CLI "${binary}" is not found ${where}; install it (${definition.install}) or point ${variable} at it`,
    { details: { field: 'provider', provider: definition.name, binary, variable, install: definition.install } },
  );
}

export interface VersionProbe {
  /** The binary could be started. */
  installed: boolean;
  /** First line of its version output, or null when it printed none or failed. */
  version: string | null;
}

/** Runs `binary ...versionArgs` to learn whether the CLI is installed and which version. Never rejects. */
export function probeVersion(definition: ProviderDefinition, binary: string, timeoutMs = 5_000): Promise<VersionProbe> {
  return new Promise((resolve) => {
    try {
      const child = execFile(
        binary,
        definition.versionArgs,
        // The same allowlist as a run: discovery must not hand the service's secrets to a CLI either.
        { timeout: timeoutMs, env: buildCliEnv(process.env, definition.env, [], definition.setEnv) },
        (err, stdout) => {
          if (err?.code === 'ENOENT' || err?.code === 'EACCES') return resolve({ installed: false, version: null });
          const firstLine = err ? '' : stdout.trim().split('\n')[0].trim();
          resolve({ installed: true, version: firstLine || null });
        },
      );
      // Nothing to say to it: a CLI that reads stdin sees EOF instead of waiting for the timeout.
      child.stdin?.end();
    } catch {
      // execFile throws synchronously for arguments it refuses (e.g. a NUL byte in the path).
      resolve({ installed: false, version: null });
    }
  });
}
