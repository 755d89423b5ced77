import { copyFile, lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { HomeSetup } from '../providers/types.js';
import { processExists } from './process-group.js';

/**
 * The files a CLI makes in a new HOME on its first start, made once per CLI binary instead of once per
 * session (ProviderDefinition.homeSetup). Codex creates and migrates its SQLite databases there; made
 * once, they took 59–220 ms off a cold run (bench -- agents; bench/RESULTS.md, nineteenth pass). What
 * they hold then is the same for every session. The setup runs in a throwaway session of the
 * sandbox, with no tenant's input or secrets; what `keep` and `keepKeys` name is copied into
 * `<dir>/<provider>-<n>`, and from there into each new session's HOME after the operator's template
 * (SandboxDirs.folders).
 *
 * No run waits for a seed: until it is made, sessions start from the template alone. A binary replaced
 * on disk (another version) gets a seed of its own; a setup that fails is logged and not tried again
 * for that binary. The seeds are this process's (`dir` is its own) and go with `close`, not before: a
 * HOME being filled may be copying a replaced one.
 */

/** Runs a CLI's setup in a throwaway HOME and hands that HOME to `use` before it goes; rejects if the CLI fails. */
export type SetupRunner = <T>(binary: string, setup: HomeSetup, use: (home: string) => Promise<T>) => Promise<T>;

interface Seed {
  /** The binary's identity on disk when the setup ran (binaryIdentity). */
  identity: string;
  /** The seed's folder; null while it is made, or when its setup failed. */
  folder: string | null;
}

export class HomeSeeds {
  private readonly seeds = new Map<string, Seed>();
  private made = 0;

  /** The seeds of this process, in `<root>/.home-seeds/<pid>`; those of processes that are gone are removed. */
  static async open(root: string, runSetup: SetupRunner, log: Logger): Promise<HomeSeeds> {
    const parent = join(root, '.home-seeds');
    await mkdir(parent, { recursive: true, mode: 0o700 });
    for (const name of await readdir(parent)) {
      if (!processExists(Number(name))) await rm(join(parent, name), { recursive: true, force: true });
    }
    return new HomeSeeds(join(parent, String(process.pid)), runSetup, log);
  }

  private constructor(
    private readonly dir: string,
    private readonly runSetup: SetupRunner,
    private readonly log: Logger,
  ) {}

  /**
   * The seed folder of `provider`'s CLI at `binary` (an absolute path) if it is made for the binary
   * there now; otherwise starts making it, once per binary, and answers undefined.
   */
  async ready(provider: string, binary: string, setup: HomeSetup): Promise<string | undefined> {
    const identity = await binaryIdentity(binary);
    const seed = this.seeds.get(provider);
    if (seed?.identity === identity) return seed.folder ?? undefined;
    this.seeds.set(provider, { identity, folder: null });
    void this.make(provider, identity, binary, setup);
    return undefined;
  }

  /** Removes the seeds. */
  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  /** The seed of this binary, which new HOMEs take from now on; a failure is logged, and they keep starting from the template. */
  private async make(provider: string, identity: string, binary: string, setup: HomeSetup): Promise<void> {
    const folder = join(this.dir, `${provider}-${++this.made}`);
    try {
      const kept = await this.runSetup(binary, setup, (home) => keepFiles(home, setup, folder));
      const current = this.seeds.get(provider);
      if (current?.identity !== identity) return;
      current.folder = folder;
      this.log.info({ provider, binary, files: kept }, 'a new session HOME starts with what this CLI made on its first start');
    } catch (err) {
      await rm(folder, { recursive: true, force: true });
      this.log.warn({ provider, binary, err: (err as Error).message }, "the CLI's first-start setup failed: each session's HOME starts from the template alone");
    }
  }
}

/** A binary on disk (the file a symlink leads to), told apart from the one it is replaced by: an upgrade in place keeps the path. */
async function binaryIdentity(binary: string): Promise<string> {
  const { dev, ino, size, mtimeMs } = await stat(binary).catch(() => ({ dev: 0, ino: 0, size: 0, mtimeMs: 0 }));
  return `${binary}:${dev}:${ino}:${size}:${mtimeMs}`;
}

/**
 * Copies into `folder` (the service's alone) the regular files under `home` whose relative path
 * matches `setup.keep`, and of each JSON object of `setup.keepKeys` those keys it has; answers their paths.
 */
async function keepFiles(home: string, setup: HomeSetup, folder: string): Promise<string[]> {
  const kept: string[] = [];
  const isFile = (path: string) => lstat(join(home, path)).then((entry) => entry.isFile(), () => false);
  const place = async (path: string, write: (to: string) => Promise<void>) => {
    await mkdir(dirname(join(folder, path)), { recursive: true, mode: 0o700 });
    await write(join(folder, path));
    kept.push(path);
  };
  await mkdir(folder, { recursive: true, mode: 0o700 });
  const { keep } = setup;
  for (const path of keep ? (await readdir(home, { recursive: true })).sort() : []) {
    if (keep?.test(path) && (await isFile(path))) await place(path, (to) => copyFile(join(home, path), to));
  }
  for (const [path, keys] of Object.entries(setup.keepKeys ?? {})) {
    if (!(await isFile(path))) continue;
    const made: unknown = JSON.parse(await readFile(join(home, path), 'utf8'));
    if (typeof made !== 'object' || made === null || Array.isArray(made)) throw new Error(`${path} is not a JSON object`);
    const picked = Object.fromEntries(keys.filter((key) => Object.hasOwn(made, key)).map((key) => [key, (made as Record<string, unknown>)[key]]));
    await place(path, (to) => writeFile(to, JSON.stringify(picked), { mode: 0o600 }));
  }
  return kept;
}
