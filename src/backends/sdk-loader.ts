import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import type { ProviderDefinition } from '../providers/types.js';

/**
 * Whether a provider's SDK can be loaded here, and the module itself. SDKs are optional dependencies:
 * a deployment without them simply has no SDK lane. A package is imported once, on first need (lane
 * resolution of an `auto` or `sdk` request, or discovery), never for `lane: core`.
 */

export interface SdkStatus {
  available: boolean;
  /** `<package>@<version>` when available. */
  runtime: string | null;
  /** Why it is unavailable (the import error), for discovery. */
  error: string | null;
}

export type ModuleImporter = (specifier: string) => Promise<unknown>;

const requireHere = createRequire(import.meta.url);

export class SdkLoader {
  private readonly loads = new Map<string, Promise<{ module: unknown; status: SdkStatus }>>();

  /** The importer is injectable so that lane resolution can be tested with and without an SDK. */
  constructor(private readonly importer: ModuleImporter = (specifier) => import(specifier)) {}

  async status(provider: ProviderDefinition): Promise<SdkStatus> {
    if (!provider.sdk) return { available: false, runtime: null, error: `${provider.name} has no SDK lane` };
    return (await this.attempt(provider.sdk.package)).status;
  }

  /** The loaded module; rejects when the SDK is unavailable. */
  async load(provider: ProviderDefinition): Promise<unknown> {
    if (!provider.sdk) throw new Error(`${provider.name} has no SDK lane`);
    const { module, status } = await this.attempt(provider.sdk.package);
    if (!status.available) throw new Error(status.error ?? `${provider.sdk.package} is not available`);
    return module;
  }

  private attempt(pkg: string): Promise<{ module: unknown; status: SdkStatus }> {
    let load = this.loads.get(pkg);
    if (!load) {
      load = this.importer(pkg).then(
        async (module) => ({ module, status: { available: true, runtime: `${pkg}@${await packageVersion(pkg)}`, error: null } }),
        (err: unknown) => ({ module: undefined, status: { available: false, runtime: null, error: err instanceof Error ? err.message : String(err) } }),
      );
      this.loads.set(pkg, load);
    }
    return load;
  }
}

/**
 * The installed version, from the package's own package.json, found along Node's lookup folders
 * rather than by resolving the package: an ESM-only package's `exports` hides both its entry from
 * require and its package.json from any resolution (@openai/codex-sdk).
 */
async function packageVersion(pkg: string): Promise<string> {
  for (const folder of requireHere.resolve.paths(pkg) ?? []) {
    const manifest = JSON.parse(await readFile(join(folder, pkg, 'package.json'), 'utf8').catch(() => '{}')) as { name?: string; version?: string };
    if (manifest.name === pkg && manifest.version) return manifest.version;
  }
  return 'unknown';
}
