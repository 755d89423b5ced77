import type { Limits } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { ApprovalDecision, ApprovalRequest, ProviderLineOutput, ProviderProcess } from '../providers/types.js';
import { withMcpServers } from './mcp-setup.js';
import { RunLifecycle, terminalErrorEvent, type LaunchedAgent } from './run-lifecycle.js';
import { spawnSubprocess, type Subprocess } from './subprocess.js';
import { surfaceLaunch } from './surfaces.js';
import type { Backend, BackendRun, BackendRunSpec, EventSink, Sandbox, SessionCli } from './types.js';
import { WarmProcesses, type AgentOutput, type HeldConversation, type WarmAgent } from './warm-processes.js';

/**
 * The core backend runs the provider's CLI as a subprocess, placed by the run's execution surface
 * (surfaces.ts: here, in the node's sandbox, or on an ssh host through a local ssh client). The provider knows the CLI's
 * protocol (argv, line parsing, control messages); RunLifecycle owns the contract every lane keeps
 * (one terminal event, interrupts, deadline, approvals, winding down); this file owns the process:
 *
 *   spawn ─► run_started ─► the provider's start lines ─► provider lines ─► process exit
 *
 * - The CLI's own start (hundreds of milliseconds of loading) overlaps the workspace's snapshot
 *   before the run: a CLI that reads its prompt from stdin is spawned first, the snapshot taken
 *   then, and its start lines written once it is (spec.workspaceSnapshot). So the run's diff holds all the
 *   agent did with its prompt; what a CLI writes in the workspace on its own before it has any input
 *   may fall either side of the snapshot.
 * - A CLI that exits without a terminal line gets one from the provider's onExit (failed or
 *   interrupted, by exit status), or the surface's failure (ssh could not reach the host).
 * - The provider's interrupt is a control message or a signal; closing the input closes stdin;
 *   stopping is SIGTERM to the process group, then SIGKILL after killGraceMs.
 * - A warm session's run (spec.warm, a provider with a WarmTurn, a local CLI) whose turn ended on the
 *   provider's own terminal line leaves its process running, parked in WarmProcesses; the session's
 *   next run that fits takes it (run_started says `warm: true`, with the same pid) and starts its turn
 *   with the provider's nextTurn(). A run that failed, was stopped, or whose CLI died starts no such
 *   reuse: its process goes as a cold run's does.
 * - ASM_PREWARM: a new session's process may be started before its first run (prewarm(), as that run
 *   would start it), told the provider's prewarm start and parked in WarmProcesses; the session's
 *   first run takes it as a warm session's next run takes a kept one, starts its turn with the
 *   provider's firstTurn() and continues the new conversation the process holds
 *   (ProviderRunInput.newConversationId, where the CLI was started with its id).
 */

export type RunLimits = Pick<Limits, 'lineBytes' | 'stderrBytes' | 'interruptGraceMs' | 'killGraceMs' | 'exitGraceMs'>;

export class CoreBackend implements Backend {
  readonly name = 'core';
  /** The process of every run in flight on this backend (parked ones are in `warm`). */
  private readonly running = new Set<Subprocess>();

  constructor(
    private readonly limits: RunLimits,
    private readonly sandbox: Sandbox,
    readonly warm: WarmProcesses = new WarmProcesses(0),
  ) {}

  start(spec: BackendRunSpec, sink: EventSink): BackendRun {
    return new CoreRun(spec, sink, this.limits, this.sandbox, this.warm, this.running);
  }

  prepare(sessionId: string, cli?: SessionCli): void {
    this.sandbox.prepare(sessionId, cli);
  }

  /**
   * Start the session's agent process now, as its first run would start it (`specOf`: that run's spec,
   * but for its prompt; null: none after all), and park it for that run for at most idleMs. Its place
   * is taken before the spec is built, so a first run submitted meanwhile waits for this process
   * rather than start another (launch). False when none waits: the provider cannot be prewarmed,
   * ASM_PREWARM has no room (WarmProcesses.reservePrewarm), or the session closed meanwhile.
   */
  async prewarm(sessionId: string, providerName: string, idleMs: number, specOf: () => Promise<BackendRunSpec | null>): Promise<boolean> {
    const reservation = this.warm.reservePrewarm(sessionId, providerName);
    if (!reservation) return false;
    try {
      const spec = await specOf();
      if (!spec || spec.surface.kind !== 'local_subprocess') return false;
      const prepared = await withMcpServers(spec, this.sandbox);
      const provider = prepared.provider.create(prepared);
      const prewarm = provider.warm?.prewarm;
      if (!prewarm) return false;
      const agent = await startAgent(prepared, provider, agentKey(prepared, provider), PARKED, this.limits, this.sandbox);
      for (const line of prewarm.start().write ?? []) agent.process.write(line);
      return reservation.park(agent, provider.providerSessionId ?? null, idleMs);
    } finally {
      // Given back unless parked (a no-op then).
      reservation.cancel();
    }
  }

  releaseSession(sessionId: string): void {
    this.warm.stopSession(sessionId);
  }

  /** The agent process groups on this backend: those running a turn and those parked. */
  processGroups(): number[] {
    return [...[...this.running].map((p) => p.pid), ...this.warm.pids()];
  }
}

class CoreRun extends RunLifecycle {
  readonly done: Promise<void>;
  private provider: ProviderProcess | null = null;
  private process: Subprocess | null = null;
  private agent: WarmAgent | null = null;
  /** The provider's line that ends the turn (endInput) came: a warm process may be kept. */
  private turnOver = false;
  private parked = false;
  private markParked!: () => void;
  private readonly parking = new Promise<void>((resolve) => (this.markParked = resolve));

  constructor(
    spec: BackendRunSpec,
    sink: EventSink,
    private readonly limits: RunLimits,
    private readonly sandbox: Sandbox,
    private readonly warm: WarmProcesses,
    private readonly running: Set<Subprocess>,
  ) {
    super(spec, sink, limits);
    this.done = this.run();
  }

  protected async launch(): Promise<LaunchedAgent> {
    const spec = await withMcpServers(this.spec, this.sandbox);
    let provider = spec.provider.create(spec);
    // A process kept by the session's last run (a warm session) or prewarmed for its first (ASM_PREWARM).
    const key = provider.warm !== undefined && spec.surface.kind === 'local_subprocess' ? agentKey(spec, provider) : '';
    const startsNew = spec.providerSessionId === undefined && !spec.continueLatest;
    if (key) await this.warm.prewarming(spec.sessionId);
    const kept = key ? this.warm.take(spec.sessionId, key, heldConversation(spec.providerSessionId ?? null, spec.previousTotals ?? null), startsNew) : null;
    // A prewarmed process holds a new conversation of its own, which the run takes.
    const newConversationId = kept?.prewarmed?.conversationId;
    if (newConversationId) provider = spec.provider.create({ ...spec, newConversationId });
    this.provider = provider;
    const output: AgentOutput = {
      onLine: (line) =>
        this.receive(() => {
          const out = provider.onLine(line);
          if (out.endInput) this.turnOver = true;
          return out;
        }),
      onStderr: (line) => {
        if (!provider.hides?.notice.test(line)) this.emit({ kind: 'stderr', payload: { content: line } });
      },
      onOverflow: () =>
        this.fail(new AsmError('buffer_overflow', `${spec.provider.name} printed a stdout line over ${this.limits.lineBytes} bytes`)),
    };
    // A CLI that reads its prompt from stdin starts while the workspace's snapshot is taken; one
    // that takes it in its arguments starts after (BackendRunSpec.workspaceSnapshot).
    if (!kept && provider.stdin !== 'control') await spec.workspaceSnapshot?.();
    const agent = (this.agent = kept?.agent ?? (await startAgent(spec, provider, key, output, this.limits, this.sandbox)));
    agent.output = output;
    const child = (this.process = agent.process);
    this.running.add(child);
    this.announce({ providerSessionId: provider.providerSessionId, args: provider.args, pid: child.pid, ...(kept && { warm: true }) });
    await spec.workspaceSnapshot?.();
    this.safely(() => this.apply(!kept ? provider.start() : kept.prewarmed ? provider.warm!.prewarm!.firstTurn() : provider.warm!.nextTurn()));
    return {
      name: spec.provider.name,
      ended: async () => {
        const closed = await Promise.race([child.closed, this.parking.then(() => null)]);
        this.running.delete(child);
        // Kept for the session's next run.
        if (closed === null) return;
        const exit = agent.launch.exitOf(closed);
        const surfaceFailure = agent.launch.failure(exit, agent.sawOutput);
        if (surfaceFailure) this.emit(terminalErrorEvent(surfaceFailure));
        else this.safely(() => this.emitAll(provider.onExit(exit, this.finished)));
      },
    };
  }

  /** A turn that ended on the provider's own terminal line leaves a warm session's process running, parked. */
  protected override windDown(): void {
    const { spec, agent } = this;
    if (spec.warm && agent?.key && this.turnOver && agent.process.alive) {
      const { providerSessionId, totals } = this.conversation();
      this.parked = true;
      this.warm.park(spec.sessionId, agent, heldConversation(providerSessionId, totals), spec.warm.idleMs);
      this.markParked();
      return;
    }
    super.windDown();
  }

  protected answer(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null): void {
    this.apply(this.provider!.decide(approval, decision, reason));
  }

  protected askToStop(): void {
    this.apply(this.provider!.interrupt());
  }

  protected stopNow(): void {
    if (!this.parked) this.process?.stop();
  }

  protected act(output: ProviderLineOutput): void {
    // The process belongs to the pool (and the session's next run) now.
    if (this.parked) return;
    for (const line of output.write ?? []) this.process?.write(line);
    if (output.endInput) this.process?.endInput();
    if (output.signal) this.process?.signalGroup(output.signal);
  }

  protected endInput(): void {
    if (!this.parked) this.process?.endInput();
  }

  protected pauseOutput(): void {
    this.process?.pauseOutput();
  }

  protected resumeOutput(): void {
    this.process?.resumeOutput();
  }
}

/** What a process was started with besides its conversation: a kept or prewarmed process serves only a run of the same key. */
function agentKey(spec: BackendRunSpec, provider: ProviderProcess): string {
  return JSON.stringify([spec.binary, spec.cwd, provider.warm!.key]);
}

/** Where a parked process's output goes (WarmProcesses.park switches it on parking): nowhere yet. */
const PARKED: AgentOutput = { onLine: () => undefined, onStderr: () => undefined, onOverflow: () => undefined };

/** A new process, its output routed to whichever run holds it. */
async function startAgent(spec: BackendRunSpec, provider: ProviderProcess, key: string, output: AgentOutput, limits: RunLimits, sandbox: Sandbox): Promise<WarmAgent> {
  const cli = { command: spec.binary, args: provider.args, cwd: spec.cwd, env: spec.env, stdin: provider.stdin, hiddenExecutables: provider.hides?.executables };
  const launch = await surfaceLaunch(spec.surface, cli, limits, { sandbox, sessionId: spec.sessionId });
  const agent: Omit<WarmAgent, 'process'> = { launch, key, output, sawOutput: false };
  const process = await spawnSubprocess({
    command: launch.command,
    args: launch.args,
    cwd: launch.cwd,
    env: launch.env,
    stdin: launch.stdin,
    limits,
    reap: launch.reap,
    onLine: (line) => {
      agent.sawOutput = true;
      agent.output.onLine(line);
    },
    onStderr: (line) => agent.output.onStderr(line),
    onOverflow: () => agent.output.onOverflow(),
  });
  return Object.assign(agent, { process });
}

function heldConversation(providerSessionId: string | null, totals: Record<string, number> | null): HeldConversation {
  return { providerSessionId, totals: JSON.stringify(totals) };
}
