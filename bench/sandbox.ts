/**
 * Sandbox benchmark: what the sandbox adds to starting a CLI. `true` is started and waited for,
 * bare (spawned as the core lane spawns a CLI without a sandbox) and sandboxed (the command line
 * `Sandbox.wrap` gives a run, the per-run preparation included: the session's folders, the
 * workspace check, the binary's lookup), alternating one and the other so that drift on a shared
 * machine hits both alike. The sandbox as configured (ASM_SANDBOX_INIT: its init program where it is
 * built) alternates with one whose init is the shell's chain (ASM_SANDBOX_INIT=shell), so the line
 * also says what the init program saves. Prints one JSON line with p50/p99 of each and the
 * difference at p50, against the target of 10 ms; progress goes to stderr.
 *
 * Both start with the service's spawner (src/backends/spawn-child.ts; ASM_SPAWNER=fork for Node's).
 *
 * Usage: npm run bench -- sandbox [--quick]   (--quick: 50 rounds instead of 500)
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { createSandbox } from '../src/backends/sandbox.js';
import { spawnChild, spawnerInUse, useSpawner } from '../src/backends/spawn-child.js';
import type { CliCommand, Sandbox } from '../src/backends/types.js';
import { loadConfig } from '../src/config.js';
import { SPAWNER_ENV } from './asm-server.js';

const log = (message: string) => process.stderr.write(`[bench sandbox] ${message}\n`);
const TARGET_ADDED_P50_MS = 10;
const WARMUP = 10;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const round = (value: number) => Number(value.toFixed(2));

/** Spawns the command as the core lane does (its spawner, its own process group, stdin closed) and waits for its exit. */
function startAndWait(cli: Pick<CliCommand, 'command' | 'args' | 'cwd' | 'env'>): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(cli.command, cli.args, { cwd: cli.cwd, env: cli.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cli.command} exited with ${code}`))));
  });
}

export async function run(args: string[]): Promise<void> {
  const rounds = args.includes('--quick') ? 50 : 500;
  const base = mkdtempSync(join(tmpdir(), 'asm-bench-sandbox-'));
  const workspace = join(base, 'workspace');
  const config = loadConfig({ ASM_WORKSPACE_ROOT: base, ASM_SANDBOX_ROOT: join(base, 'sandbox'), ...SPAWNER_ENV });
  useSpawner(config.spawner);
  const sandbox = await createSandbox(config.sandbox, pino({ level: 'silent' }));
  const shellInit = await createSandbox({ ...config.sandbox, init: 'shell' }, pino({ level: 'silent' }));
  // Each sandbox its own session, so neither finds the other's folders.
  const sessionOf = (through: Sandbox) => (through === sandbox ? 'ses_bench' : 'ses_bench_shell_init');
  try {
    mkdirSync(workspace);
    const cli: CliCommand = { command: 'true', args: [], cwd: workspace, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdin: 'closed' };
    const bare: number[] = [];
    const sandboxed: number[] = [];
    const shellInitRuns: number[] = [];
    const measure = async (sample: number[] | null, through: Sandbox | null) => {
      const started = performance.now();
      await startAndWait(through ? await through.wrap(sessionOf(through), cli) : cli);
      sample?.push(performance.now() - started);
    };
    const sides: Array<[number[], Sandbox | null]> = [
      [bare, null],
      [sandboxed, sandbox],
      [shellInitRuns, shellInit],
    ];
    log(`warming up (${WARMUP} of each)`);
    for (let i = 0; i < WARMUP; i++) for (const [, through] of sides) await measure(null, through);
    log(`${rounds} rounds, bare, sandboxed and sandboxed with the shell's init alternating`);
    for (let i = 0; i < rounds; i++) {
      // Which one goes first rotates too, so none always follows another.
      for (let j = 0; j < sides.length; j++) {
        const [sample, through] = sides[(i + j) % sides.length]!;
        await measure(sample, through);
      }
    }
    for (const [sample] of sides) sample.sort((a, b) => a - b);
    const added = percentile(sandboxed, 50) - percentile(bare, 50);
    const result = {
      bench: 'sandbox',
      command: 'true',
      sandbox: 'bwrap',
      spawner: spawnerInUse(),
      user: process.getuid?.() === 0 ? config.sandbox.user : 'the service user (user namespace)',
      rounds,
      bare_ms: { p50: round(percentile(bare, 50)), p99: round(percentile(bare, 99)) },
      sandbox_init: config.sandbox.init,
      sandboxed_ms: { p50: round(percentile(sandboxed, 50)), p99: round(percentile(sandboxed, 99)) },
      shell_init_ms: { p50: round(percentile(shellInitRuns, 50)), p99: round(percentile(shellInitRuns, 99)) },
      init_saved_p50_ms: round(percentile(shellInitRuns, 50) - percentile(sandboxed, 50)),
      added_p50_ms: round(added),
      target_added_p50_ms: TARGET_ADDED_P50_MS,
      target_met: added < TARGET_ADDED_P50_MS,
      machine: { cpus: cpus().length, load_avg_1m: round(loadavg()[0]!), node: process.version },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    for (const through of [sandbox, shellInit]) {
      await through.release(sessionOf(through));
      await through.close();
    }
    rmSync(base, { recursive: true, force: true });
  }
}
