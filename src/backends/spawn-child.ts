import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { isMainThread } from 'node:worker_threads';
import type { StartedProcess, StartOptions } from '../providers/types.js';

/**
 * Starts the service's child processes (the CLIs, git): with posix_spawn (native/spawn.c) where its
 * module is built and the kernel has pidfds (Linux 5.4), else with Node's child_process, which forks.
 * A fork copies the service's page tables on its main thread, so each spawn held up every session's
 * events for as long as that took, more the larger the service (bench/RESULTS.md, twenty-first pass);
 * posix_spawn copies nothing. Both give a StartedProcess (src/providers/types.ts): ChildProcess's
 * events in ChildProcess's order, stdio as sockets.
 */

export type Spawner = 'posix_spawn' | 'fork';

interface NativeSpawn {
  spawn(file: string, argv: string[], env: string[], cwd: string, piped: boolean[], setsid: boolean, onExit: (code: number | null, signal: number | null) => void): [number, number, number, number];
}

/** The built module, or why there is none (not built: no compiler at `npm ci`, not Linux; no pidfds). */
function loadNative(): { native: NativeSpawn } | { error: string } {
  // Its pidfd watches live on the loop of the thread that loaded it, which a worker thread's end would
  // close under them: the service spawns from its main thread only.
  if (!isMainThread) return { error: 'loaded only on the main thread' };
  try {
    return { native: createRequire(import.meta.url)('../../native/build/Release/asm_spawn.node') as NativeSpawn };
  } catch (err) {
    return { error: (err as Error).message.split('\n')[0]! };
  }
}

const loaded = loadNative();
/** The module children start through; null: Node's child_process. */
let active: NativeSpawn | null = 'native' in loaded ? loaded.native : null;

/**
 * The spawner for the rest of the process (ASM_SPAWNER, chosen once at start-up): posix_spawn falls
 * back to fork where the module did not load, and says why.
 */
export function useSpawner(wanted: Spawner): { spawner: Spawner; fallback?: string } {
  active = wanted === 'posix_spawn' && 'native' in loaded ? loaded.native : null;
  const fellBack = wanted === 'posix_spawn' && 'error' in loaded;
  return { spawner: spawnerInUse(), ...(fellBack && { fallback: `native/spawn.c is not loaded (${loaded.error})` }) };
}

export function spawnerInUse(): Spawner {
  return active ? 'posix_spawn' : 'fork';
}

export function spawnChild(command: string, args: string[], options: StartOptions): StartedProcess {
  return active ? new SpawnedChild(active, command, args, options) : spawn(command, args, options);
}

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, number]) => [number, name as NodeJS.Signals]));

class SpawnedChild extends EventEmitter implements StartedProcess {
  readonly pid?: number;
  readonly stdin: Writable | null = null;
  readonly stdout: Readable | null = null;
  readonly stderr: Readable | null = null;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  killed = false;
  /** stdout and stderr while open: 'close' comes after both, as ChildProcess's does. */
  private openOutputs = 0;
  private exited = false;
  private closeEmitted = false;

  constructor(native: NativeSpawn, command: string, args: string[], options: StartOptions) {
    super();
    const env = Object.entries(options.env).map(([name, value]) => `${name}=${value}`);
    // child_process refuses these synchronously too; C strings would end at the NUL.
    for (const text of [command, options.cwd, ...args, ...env]) {
      if (text.includes('\0')) throw Object.assign(new TypeError(`spawn: arguments, environment and cwd must not contain null bytes`), { code: 'ERR_INVALID_ARG_VALUE' });
    }
    let started: [number, number, number, number];
    try {
      started = native.spawn(command, [command, ...args], env, options.cwd, options.stdio.map((kind) => kind === 'pipe'), options.detached ?? false, (code, signal) => this.onExit(code, signal));
    } catch (err) {
      // As ChildProcess: its pipes exist, and end; 'error' comes a tick later, then 'close' with the
      // negative errno as its code.
      const { code, errno } = err as NodeJS.ErrnoException;
      const error = Object.assign(new Error(`spawn ${command} ${code}`), { code, errno, syscall: `spawn ${command}`, path: command, spawnargs: args });
      const [stdin, stdout, stderr] = options.stdio.map((kind) => (kind === 'pipe' ? new PassThrough() : null));
      Object.assign(this, { stdin, stdout, stderr });
      process.nextTick(() => {
        this.emit('error', error);
        for (const stream of [stdin, stdout, stderr]) stream?.destroy();
        this.emit('close', errno ?? null, null);
      });
      return;
    }
    const [pid, stdin, stdout, stderr] = started;
    this.pid = pid;
    this.stdin = this.socket(stdin, false);
    this.stdout = this.socket(stdout, true);
    this.stderr = this.socket(stderr, true);
    process.nextTick(() => this.emit('spawn'));
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.exited || this.pid === undefined) return false;
    try {
      process.kill(this.pid, signal);
      this.killed = true;
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') this.emit('error', err);
      return false;
    }
  }

  private socket(fd: number, readable: boolean): Socket | null {
    if (fd < 0) return null;
    const socket = new Socket({ fd, readable, writable: !readable });
    if (readable) {
      this.openOutputs++;
      socket.once('close', () => {
        this.openOutputs--;
        this.maybeClose();
      });
    }
    return socket;
  }

  /** As ChildProcess: stdin is closed, output nobody reads is drained, and 'close' waits for the pipes. */
  private onExit(code: number | null, signal: number | null): void {
    this.exited = true;
    this.exitCode = code;
    this.signalCode = signal === null ? null : (SIGNAL_NAMES.get(signal) ?? null);
    this.stdin?.destroy();
    this.emit('exit', this.exitCode, this.signalCode);
    process.nextTick(() => {
      for (const stream of [this.stdout, this.stderr]) if (stream && stream.readableFlowing === null && stream.listenerCount('data') === 0) stream.resume();
      this.maybeClose();
    });
  }

  private maybeClose(): void {
    if (!this.exited || this.openOutputs > 0 || this.closeEmitted) return;
    this.closeEmitted = true;
    this.emit('close', this.exitCode, this.signalCode);
  }
}
