import type { Limits } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { ApprovalDecision, ApprovalRequest, ProviderLineOutput, ProviderProcess } from '../providers/types.js';
import { withMcpServers } from './mcp-setup.js';
import { RunLifecycle, terminalErrorEvent, type LaunchedAgent } from './run-lifecycle.js';
import { spawnSubprocess, type Subprocess } from './subprocess.js';
import { surfaceLaunch } from './surfaces.js';
import type { Backend, BackendRun, BackendRunSpec, EventSink, Sandbox } from './types.js';

/**
 * The core backend runs the provider's CLI as a subprocess, placed by the run's execution surface
 * (surfaces.ts: here, in the node's sandbox, or on an ssh host through a local ssh client). The provider knows the CLI's
 * protocol (argv, line parsing, control messages); RunLifecycle owns the contract every lane keeps
 * (one terminal event, interrupts, deadline, approvals, winding down); this file owns the process:
 *
 *   spawn ─► run_started ─► the provider's start lines ─► provider lines ─► process exit
 *
 * - A CLI that exits without a terminal line gets one from the provider's onExit (failed or
 *   interrupted, by exit status), or the surface's failure (ssh could not reach the host).
 * - The provider's interrupt is a control message or a signal; closing the input closes stdin;
 *   stopping is SIGTERM to the process group, then SIGKILL after killGraceMs.
 */

export type RunLimits = Pick<Limits, 'lineBytes' | 'stderrBytes' | 'interruptGraceMs' | 'killGraceMs' | 'exitGraceMs'>;

export class CoreBackend implements Backend {
  readonly name = 'core';

  constructor(
    private readonly limits: RunLimits,
    private readonly sandbox: Sandbox,
  ) {}

  start(spec: BackendRunSpec, sink: EventSink): BackendRun {
    return new CoreRun(spec, sink, this.limits, this.sandbox);
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
    private readonly sandbox: Sandbox,
  ) {
    super(spec, sink, limits);
    this.done = this.run();
  }

  protected async launch(): Promise<LaunchedAgent> {
    const spec = await withMcpServers(this.spec, this.sandbox);
    const provider = (this.provider = spec.provider.create(spec));
    const cli = { command: spec.binary, args: provider.args, cwd: spec.cwd, env: spec.env, stdin: provider.stdin };
    const launch = await surfaceLaunch(spec.surface, cli, this.limits, { sandbox: this.sandbox, sessionId: spec.sessionId });
    let sawOutput = false;
    const child = (this.process = await spawnSubprocess({
      command: launch.command,
      args: launch.args,
      cwd: launch.cwd,
      env: launch.env,
      stdin: launch.stdin,
      limits: this.limits,
      reap: launch.reap,
      onLine: (line) => {
        sawOutput = true;
        this.receive(() => provider.onLine(line));
      },
      onStderr: (line) => this.emit({ kind: 'stderr', payload: { content: line } }),
      onOverflow: () =>
        this.fail(new AsmError('buffer_overflow', `${spec.provider.name} printed a stdout line over ${this.limits.lineBytes} bytes`)),
    }));
    this.announce({ providerSessionId: provider.providerSessionId, args: provider.args, pid: child.pid });
    this.safely(() => this.apply(provider.start()));
    return {
      name: spec.provider.name,
      ended: async () => {
        const exit = launch.exitOf(await child.closed);
        const surfaceFailure = launch.failure(exit, sawOutput);
        if (surfaceFailure) this.emit(terminalErrorEvent(surfaceFailure));
        else this.safely(() => this.emitAll(provider.onExit(exit, this.finished)));
      },
    };
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

  protected endInput(): void {
    this.process?.endInput();
  }

  protected pauseOutput(): void {
    this.process?.pauseOutput();
  }

  protected resumeOutput(): void {
    this.process?.resumeOutput();
  }
}
