import { accessSync, constants, statSync } from 'node:fs';
import type { Writable } from 'node:stream';
import type { Limits } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { ProcessExit, StartedProcess } from '../providers/types.js';
import { groupTakes } from './process-group.js';
import { spawnChild } from './spawn-child.js';

/**
 * Runs one CLI as a child process in its own process group, and turns its output into lines.
 *
 * - The group: the CLI is spawned `detached`, so it leads a new process group; signals go to the whole
 *   group (`kill(-pid)`), reaching the tools the agent started too. A run owns its group: once the CLI
 *   has exited, whatever is left in the group is stopped, so nothing outlives the run.
 * - stdin is a pipe only when the provider uses it as a control channel; otherwise it is /dev/null,
 *   because some CLIs wait for stdin to reach EOF before they start.
 * - stdout is framed into lines of at most `lineBytes`; a longer line is reported once through
 *   `onOverflow` (the caller fails the run) and the rest of that line is discarded.
 * - Processes that left the group (setsid, a double fork) are the sandbox's to find: `reap`.
 * - stderr is never protocol: it is reported line by line (each line cut at `stderrBytes`) and its
 *   last `stderrBytes` bytes are kept for error messages.
 */

export interface SubprocessOptions {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  stdin: 'control' | 'closed';
  limits: Pick<Limits, 'lineBytes' | 'stderrBytes' | 'killGraceMs'>;
  onLine(line: string): void;
  onStderr(line: string): void;
  /** A stdout line was longer than `limits.lineBytes`. */
  onOverflow(): void;
  /** Kills the run's processes that left its group (SandboxedCommand.reap), once the CLI is gone. */
  reap?(): void;
}

/**
 * Starts the CLI. Resolves once it is running; rejects with an AsmError when it cannot start:
 * config_invalid for an unusable working directory, cli_not_found for a missing or non-executable binary.
 * Output handlers are only called after the promise resolved (output is I/O, which Node delivers after
 * the `spawn` notification and the promise continuations queued by it).
 */
export async function spawnSubprocess(opts: SubprocessOptions): Promise<Subprocess> {
  // Checked first because spawn reports a bad cwd as ENOENT, indistinguishable from a missing binary.
  checkWorkingDirectory(opts.cwd);
  let child: StartedProcess;
  try {
    child = spawnChild(opts.command, opts.args, {
      cwd: opts.cwd,
      env: opts.env,
      detached: true,
      stdio: [opts.stdin === 'control' ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    // Thrown synchronously for arguments Node refuses, e.g. a NUL byte in the prompt.
    throw spawnError(err, opts.command);
  }
  await new Promise<void>((resolve, reject) => {
    const onSpawn = () => {
      child.off('error', onError);
      resolve();
    };
    const onError = (err: Error) => {
      child.off('spawn', onSpawn);
      reject(spawnError(err, opts.command));
    };
    child.once('spawn', onSpawn);
    child.once('error', onError);
  });
  return new Subprocess(child, opts);
}

export function checkWorkingDirectory(cwd: string): void {
  try {
    if (!statSync(cwd).isDirectory()) throw new AsmError('config_invalid', `working directory is not a directory: ${cwd}`);
    accessSync(cwd, constants.X_OK);
  } catch (err) {
    if (err instanceof AsmError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT' || code === 'ENOTDIR'
        ? `working directory does not exist: ${cwd}`
        : `working directory cannot be used (${code}): ${cwd}`;
    throw new AsmError('config_invalid', message);
  }
}

export function spawnError(err: unknown, command: string): AsmError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new AsmError('cli_not_found', `CLI binary not found: ${command}`, { cause: err });
  if (code === 'EACCES') {
    return new AsmError('cli_not_found', `CLI binary is not executable (permission denied): ${command}`, { cause: err });
  }
  if (code?.startsWith('ERR_INVALID_ARG')) {
    return new AsmError('config_invalid', `cannot start ${command}: ${(err as Error).message}`, { cause: err });
  }
  // Resource exhaustion (EMFILE, EAGAIN, ENOMEM): the host is busy, a retry may work.
  return new AsmError('transport_error', `cannot start ${command}: ${(err as Error).message}`, { cause: err });
}

/** How long a signal that may have been lost is sent again (signalGroup), and how often. */
const RESEND_WINDOW_MS = 2_000;
const RESEND_POLL_MS = 25;
/** A CLI's first moments after its spawn, in which a signal may not reach it yet. */
const EARLY_LIFE_MS = 1_000;

export class Subprocess {
  readonly pid: number;
  /** Resolves when the CLI has exited and its output pipes are closed: every line has been reported. */
  readonly closed: Promise<ProcessExit>;
  private readonly stdin: Writable | null;
  private readonly killGraceMs: number;
  private readonly spawnedAt = performance.now();
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopping = false;
  private isClosed = false;

  constructor(
    private readonly child: StartedProcess,
    opts: SubprocessOptions,
  ) {
    this.pid = child.pid!;
    this.killGraceMs = opts.limits.killGraceMs;
    this.stdin = child.stdin;
    // EPIPE and friends arrive here once the CLI closed its stdin or exited. There is nobody left to
    // talk to, and an unhandled 'error' would take the whole service down.
    this.stdin?.on('error', () => {});
    // Spawn errors were handled above; later ones (a failed kill) are covered by signalGroup.
    child.on('error', () => {});

    const stdout = new LineFramer(opts.limits.lineBytes, opts.onLine, () => opts.onOverflow());
    const stderr = new LineFramer(opts.limits.stderrBytes, opts.onStderr, opts.onStderr);
    const stderrTail = new TailBuffer(opts.limits.stderrBytes);
    child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => {
      stderrTail.push(chunk);
      stderr.push(chunk);
    });

    // The CLI is gone, but a process it left in the group may still hold our pipes open, so 'close'
    // would never come: give it killGraceMs, then stop the group.
    child.on('exit', () => this.later(this.killGraceMs, () => this.stop()));

    this.closed = new Promise((resolve) => {
      child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
        stdout.end();
        stderr.end();
        // Leftovers that did not hold our pipes (e.g. `daemon >/dev/null &`) would outlive the run.
        this.signalGroup('SIGKILL');
        this.isClosed = true;
        for (const timer of this.timers) clearTimeout(timer);
        resolve({ code, signal, stderr: stderrTail.text() });
        // Those that left the group are looked for in /proc, on the main thread: a timer's turn later,
        // once those waiting on `closed` have recorded the run's end (bench/RESULTS.md, thirty-ninth pass).
        if (opts.reap) setTimeout(() => opts.reap!(), 0);
      });
    });
  }

  /** Running, and not being stopped: a process that can take more input. */
  get alive(): boolean {
    return !this.isClosed && !this.stopping && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Write one line to the CLI's stdin; silently dropped once stdin is closed or was never a pipe. */
  write(line: string): void {
    if (!this.stdin || this.stdin.writableEnded || this.stdin.destroyed) return;
    this.stdin.write(`${line}\n`);
  }

  /** Close the CLI's stdin (EOF), the polite way to tell a stream-json CLI that we are done. */
  endInput(): void {
    if (this.stdin && !this.stdin.writableEnded) this.stdin.end();
  }

  /**
   * Stop reading the CLI's output: the pipes fill up and the CLI blocks on its next write, which is
   * how a consumer slows a chatty producer down. stderr too, or a CLI could flood through it instead.
   */
  pauseOutput(): void {
    this.child.stdout?.pause();
    this.child.stderr?.pause();
  }

  resumeOutput(): void {
    this.child.stdout?.resume();
    this.child.stderr?.resume();
  }

  /**
   * Send a signal to the CLI's whole process group. A signal sent in the CLI's first moments can be
   * lost (issue 13, finding 7): the sandbox's wrappers ignore it until the CLI is exec'd, and `sh -c`
   * holds a SIGINT that comes before its command is forked until that command ends. So a signal is
   * sent again every RESEND_POLL_MS while the CLI is younger than EARLY_LIFE_MS, and after that until
   * some member of the group takes it (does not ignore it), for at most RESEND_WINDOW_MS; a CLI that
   * ignores it for good is left to the stop escalation.
   */
  signalGroup(signal: NodeJS.Signals): void {
    if (this.isClosed) return;
    const settled = signal === 'SIGKILL' || (!this.isEarly() && groupTakes(this.pid, signal));
    this.kill(signal);
    if (!settled) this.resend(signal, Date.now() + RESEND_WINDOW_MS);
  }

  private resend(signal: NodeJS.Signals, until: number): void {
    this.later(RESEND_POLL_MS, () => {
      const early = this.isEarly();
      const taken = !early && groupTakes(this.pid, signal);
      if (early || taken) this.kill(signal);
      if (!taken && Date.now() < until) this.resend(signal, until);
    });
  }

  private isEarly(): boolean {
    return performance.now() - this.spawnedAt < EARLY_LIFE_MS;
  }

  private kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, signal);
    } catch (err) {
      // ESRCH: the group is already empty. EPERM: a member changed its user id; nothing more we can do.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ESRCH' && code !== 'EPERM') throw err;
    }
  }

  /** SIGTERM the group, then SIGKILL it after killGraceMs. Idempotent. */
  stop(): void {
    if (this.stopping || this.isClosed) return;
    this.stopping = true;
    this.signalGroup('SIGTERM');
    this.later(this.killGraceMs, () => {
      this.signalGroup('SIGKILL');
      // A process that left the group (setsid) may still hold our pipes: stop waiting for it.
      this.later(this.killGraceMs, () => {
        this.child.stdout?.destroy();
        this.child.stderr?.destroy();
        this.stdin?.destroy();
      });
    });
  }

  private later(ms: number, action: () => void): void {
    if (this.isClosed) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      action();
    }, ms);
    this.timers.add(timer);
  }
}

/**
 * Splits a byte stream into lines (without the newline). Bytes are kept until the line ends, so a
 * multi-byte character split across chunks still decodes. A line longer than maxBytes is cut: its
 * first maxBytes bytes go to `onOverlong` and the rest of it is discarded.
 */
export class LineFramer {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLine: (line: string) => void,
    private readonly onOverlong: (head: string) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      this.append(chunk.subarray(start, newline === -1 ? chunk.length : newline));
      if (newline === -1) return;
      if (this.discarding) this.discarding = false;
      else this.onLine(this.take());
      start = newline + 1;
    }
  }

  /** The stream ended: a last line without a newline still counts. */
  end(): void {
    if (this.size > 0) this.onLine(this.take());
    this.discarding = false;
  }

  private append(bytes: Buffer): void {
    if (this.discarding || bytes.length === 0) return;
    if (this.size + bytes.length <= this.maxBytes) {
      this.parts.push(bytes);
      this.size += bytes.length;
      return;
    }
    this.parts.push(bytes.subarray(0, this.maxBytes - this.size));
    this.onOverlong(this.take());
    this.discarding = true;
  }

  private take(): string {
    const line = Buffer.concat(this.parts).toString('utf8');
    this.parts = [];
    this.size = 0;
    return line;
  }
}

/** The last `maxBytes` bytes of a stream. */
class TailBuffer {
  private tail = Buffer.alloc(0);

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): void {
    const joined = Buffer.concat([this.tail, chunk]);
    this.tail = joined.length > this.maxBytes ? joined.subarray(joined.length - this.maxBytes) : joined;
  }

  text(): string {
    return this.tail.toString('utf8');
  }
}
