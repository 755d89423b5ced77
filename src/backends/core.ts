import type { Limits } from '../config.js';
import { AsmError } from '../errors.js';
import type { ApprovalDecision, ApprovalRequest, ProviderLineOutput, ProviderProcess } from '../providers/types.js';
import { errorEvent, RunLifecycle } from './run-lifecycle.js';
import { spawnSubprocess, type Subprocess } from './subprocess.js';
import { surfaceLaunch, type SurfaceLaunch } from './surfaces.js';
import type { Backend, BackendRun, BackendRunSpec, EventSink } from './types.js';

/**
 * The core backend runs the provider's CLI as a subprocess, placed by the run's execution surface
 * (surfaces.ts: here, or on an ssh host through a local ssh client). The provider knows the CLI's
 * protocol (argv, line parsing, control messages); RunLifecycle owns the contract every lane keeps
 * (one terminal event, interrupts, deadline, approvals); this file owns the process:
 *
 *   spawn ─► run_started ─► provider lines ─► exactly one terminal event ─► stdin closed ─► process gone
 *
 * - After the terminal event stdin is closed so the CLI exits; if it is still there after
 *   exitGraceMs, it is stopped (SIGTERM, then SIGKILL after killGraceMs).
 * - A CLI that exits without a terminal line gets one from the provider's onExit (failed or
 *   interrupted, by exit status).
 * - Interrupt: the provider's own mechanism first (a control message or SIGINT); if the process is
 *   still there after interruptGraceMs, it is stopped.
 */

export type RunLimits = Pick<Limits, 'lineBytes' | 'stderrBytes' | 'interruptGraceMs' | 'killGraceMs' | 'exitGraceMs'>;

export class CoreBackend implements Backend {
  readonly name = 'core';

  constructor(private readonly limits: RunLimits) {}

  start(spec: BackendRunSpec, sink: EventSink): BackendRun {
    return new CoreRun(spec, sink, this.limits);
  }
}

class CoreRun extends RunLifecycle {
  readonly done: Promise<void>;
  private provider: ProviderProcess | null = null;
  private process: Subprocess | null = null;

  constructor(
    spec: BackendRunSpec,
    sink: EventSink,
    private readonly limits: RunLimits,
  ) {
    super(spec, sink, limits.interruptGraceMs);
    this.done = this.run();
  }

  /** The whole run; never rejects. */
  private async run(): Promise<void> {
    const { spec } = this;
    this.startDeadline();
    let provider: ProviderProcess;
    let launch: SurfaceLaunch;
    let sawOutput = false;
    try {
      provider = this.provider = spec.provider.create(spec);
      launch = surfaceLaunch(spec.surface, { command: spec.binary, args: provider.args, cwd: spec.cwd, env: spec.env, stdin: provider.stdin }, this.limits);
      this.process = await spawnSubprocess({
        command: launch.command,
        args: launch.args,
        cwd: launch.cwd,
        env: launch.env,
        stdin: launch.stdin,
        limits: this.limits,
        onLine: (line) => {
          sawOutput = true;
          if (!this.finished) this.safely(() => this.apply(provider.onLine(line)));
        },
        onStderr: (line) => this.emit({ kind: 'stderr', payload: { content: line } }),
        onOverflow: () =>
          this.fail(
            new AsmError('buffer_overflow', `${spec.provider.name} printed a stdout line over ${this.limits.lineBytes} bytes`),
          ),
      });
    } catch (err) {
      this.emit(errorEvent(AsmError.from(err)));
      this.clearTimers();
      return;
    }

    this.providerSessionId = provider.providerSessionId ?? this.providerSessionId;
    this.emit({
      kind: 'run_started',
      payload: {
        provider_session_id: this.providerSessionId,
        command: spec.binary,
        args: provider.args,
        cwd: spec.cwd,
        node: spec.node,
        pid: this.process.pid,
      },
    });
    this.safely(() => this.apply(provider.start()));
    this.markReachable();

    const exit = await this.process.closed;
    const surfaceFailure = launch.failure(exit, sawOutput);
    if (surfaceFailure) this.emit(errorEvent(surfaceFailure));
    else this.safely(() => this.emitAll(provider.onExit(exit, this.finished)));
    if (!this.finished) {
      // Only reachable if the provider breaks its contract; the run must still end.
      this.emit(errorEvent(new AsmError('transport_error', `${spec.provider.name} exited without a terminal event`)));
    }
    this.clearTimers();
  }

  protected answer(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null): void {
    this.apply(this.provider!.decide(approval, decision, reason));
  }

  protected askToStop(): void {
    this.apply(this.provider!.interrupt());
  }

  protected stopNow(): void {
    this.process?.stop();
  }

  protected act(output: ProviderLineOutput): void {
    for (const line of output.write ?? []) this.process?.write(line);
    if (output.endInput) this.process?.endInput();
    if (output.signal) this.process?.signalGroup(output.signal);
  }

  protected release(): void {
    this.process?.endInput();
    this.later(this.limits.exitGraceMs, () => this.process?.stop());
  }
}
