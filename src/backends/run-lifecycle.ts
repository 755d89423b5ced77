import { randomUUID } from 'node:crypto';
import type { Limits } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import type { ApprovalDecision, ApprovalRequest, ProviderLineOutput, ProviderTotals } from '../providers/types.js';
import { TERMINAL_KINDS, type ProviderEvent } from '../schemas/events.js';
import type { BackendRun, BackendRunSpec, EventSink, InterruptReason } from './types.js';

/**
 * The part of a run's life cycle every lane shares, so the core lane (a CLI subprocess) and the SDK
 * lane (a vendor SDK driving that CLI) keep the same contract and emit the same events:
 *
 *   launch ─► run_started ─► the agent's output ─► exactly one terminal event ─► agent released ─► agent gone
 *
 * - A launch that fails ends the run with its error as the only event.
 * - Exactly one terminal event (result | error | run_completed), and nothing after it. An agent that
 *   ends without one gets a transport_error, so the run still ends.
 * - The terminal event of an interrupted run is the interrupt's error (user_cancelled, or timeout for
 *   deadline/timeout), unless the agent got a successful `result` out first: finished work stands.
 * - Interrupt: the agent's own mechanism first; if it is still there after interruptGraceMs, it is
 *   stopped. An interrupt that comes before the agent is running reaches it once it is.
 * - The run's deadline (spec.deadlineMs) is an interrupt with reason 'deadline'; an agent that prints
 *   nothing for spec.idleTimeoutMs while no approval waits is interrupted with reason 'idle'.
 * - Backpressure: while more than MAX_PENDING_EVENTS events the sink is still recording are pending,
 *   the lane stops reading the agent's output (pauseOutput), and reads on once they are down to half.
 * - After the terminal event the agent's input is closed so it exits; if it is still there after
 *   exitGraceMs, it is stopped (windDown; the core lane may keep a warm session's process instead).
 * - Approvals get an id here (apr_<uuid>) and are answered through decide(); a finished run drops them.
 * - The provider session id (known up front or learnt from the output) is stamped on the terminal
 *   event as `provider_session_id`, so continuation can rely on it; so are the conversation's latest
 *   cumulative totals, as `provider_totals`, which the next run of the conversation gets back.
 *
 * A lane supplies its agent: launching it (and announcing it), answering an approval, asking it to
 * stop, stopping it, closing its input, and the process actions of a provider's output (stdin, signals).
 */

export type GraceLimits = Pick<Limits, 'interruptGraceMs' | 'exitGraceMs'>;

/** What run_started says about the agent a lane launched. */
export interface AgentAnnouncement {
  /** The provider session id when known before any output (a continued conversation). */
  providerSessionId?: string;
  /** The arguments after the binary ([] when an SDK builds its own argv). */
  args: string[];
  /** The process id, when the lane owns the process. */
  pid?: number;
  /** The process was kept by the run's warm session from its previous run. */
  warm?: boolean;
}

/** An agent a lane launched and announced. */
export interface LaunchedAgent {
  /** What the agent is called in errors. */
  name: string;
  /** Resolves once the agent is gone, after emitting what its ending says. */
  ended(): Promise<void>;
}

const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Events handed to the sink and not yet recorded, beyond which the agent's output is no longer read.
 * Each is at most one line of ASM_MAX_LINE_BYTES; in practice a few hundred bytes, so this holds a
 * flooding agent to a few hundred kilobytes of queued events.
 */
const MAX_PENDING_EVENTS = 256;

export abstract class RunLifecycle implements BackendRun {
  abstract readonly done: Promise<void>;
  protected finished = false;
  private interruptReason: InterruptReason | null = null;
  private providerSessionId: string | null;
  private providerTotals: ProviderTotals | null;
  /** Whether the agent is there to be told things (interrupts wait until it is). */
  private reachable = false;
  private readonly approvals = new Map<string, ApprovalRequest>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private idleTimer: NodeJS.Timeout | null = null;
  private pendingEvents = 0;
  private outputPaused = false;

  constructor(
    protected readonly spec: BackendRunSpec,
    private readonly sink: EventSink,
    private readonly grace: GraceLimits,
  ) {
    this.providerSessionId = spec.providerSessionId ?? null;
    // A run that learns nothing new leaves its conversation's totals as they were.
    this.providerTotals = spec.previousTotals ?? null;
  }

  /**
   * Start the agent and call announce() as soon as it is started, before any of its output can
   * arrive. May throw (an AsmError) when the agent cannot be started.
   */
  protected abstract launch(): Promise<LaunchedAgent>;
  /** Answer an approval the agent is waiting on. */
  protected abstract answer(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null): void;
  /** Ask the agent to stop its turn (its own mechanism; the caller stops it harder after a grace period). */
  protected abstract askToStop(): void;
  /** Stop the agent without grace. */
  protected abstract stopNow(): void;
  /** The process actions of a provider's output (stdin lines, closing stdin, signals). */
  protected abstract act(output: ProviderLineOutput): void;
  /** Close the agent's input: its turn is over and it should exit. */
  protected abstract endInput(): void;
  /** Stop reading the agent's output for now (backpressure); a lane without a stream to pause does nothing. */
  protected abstract pauseOutput(): void;
  /** Read the agent's output again. */
  protected abstract resumeOutput(): void;

  /** The whole run; never rejects. A lane calls it once, at the end of its constructor. */
  protected async run(): Promise<void> {
    this.startDeadline();
    let agent: LaunchedAgent;
    try {
      agent = await this.launch();
    } catch (err) {
      this.emit(terminalErrorEvent(AsmError.from(err)));
      this.clearTimers();
      return;
    }
    this.markReachable();
    await agent.ended();
    if (!this.finished) {
      // Only reachable if the provider breaks its contract; the run must still end.
      this.emit(terminalErrorEvent(new AsmError('transport_error', `${agent.name} ended without a terminal event`)));
    }
    this.clearTimers();
  }

  /** Emit run_started for the agent the lane just started. */
  protected announce(agent: AgentAnnouncement): void {
    const { spec } = this;
    this.providerSessionId = agent.providerSessionId ?? this.providerSessionId;
    this.emit({
      kind: 'run_started',
      payload: {
        provider_session_id: this.providerSessionId,
        command: spec.binary,
        args: agent.args,
        cwd: spec.cwd,
        node: spec.node,
        ...(agent.pid !== undefined && { pid: agent.pid }),
        ...(agent.warm && { warm: true }),
      },
    });
  }

  /** Output of the agent as the provider maps it; ignored once the run has its terminal event. */
  protected receive(output: () => ProviderLineOutput): void {
    if (!this.finished) this.safely(() => this.apply(output()));
  }

  async decide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<void> {
    const approval = this.approvals.get(approvalId);
    if (!approval) throw new AsmError('not_found', `approval ${approvalId} is not pending`);
    this.approvals.delete(approvalId);
    this.safely(() => this.answer(approval, decision, reason));
  }

  async interrupt(reason: InterruptReason): Promise<void> {
    if (this.finished || this.interruptReason) return;
    this.interruptReason = reason;
    // Before the agent is running there is nothing to tell; markReachable() sends the interrupt then.
    if (this.reachable) this.sendInterrupt();
  }

  /** The agent is running: an interrupt that came before now reaches it. */
  private markReachable(): void {
    this.reachable = true;
    this.armIdleTimer();
    if (this.interruptReason && !this.finished) this.sendInterrupt();
  }

  private startDeadline(): void {
    this.later(this.spec.deadlineMs, () => void this.interrupt('deadline'));
  }

  /** (Re)starts the idle clock: called when the agent is reachable and for each event it produces. */
  private armIdleTimer(): void {
    const { idleTimeoutMs } = this.spec;
    if (idleTimeoutMs <= 0 || this.finished || !this.reachable) return;
    if (this.idleTimer) {
      this.idleTimer.refresh();
      return;
    }
    this.idleTimer = setTimeout(() => {
      // An agent waiting for an approval is silent by design; the approval's own timeout covers it.
      if (this.approvals.size > 0) this.idleTimer?.refresh();
      else void this.interrupt('idle');
    }, Math.min(idleTimeoutMs, MAX_TIMEOUT_MS));
  }

  private sendInterrupt(): void {
    this.safely(() => this.askToStop());
    this.later(this.grace.interruptGraceMs, () => this.stopNow());
  }

  /** Carry out what the provider asked for, in order: events, approvals, then the process actions. */
  protected apply(output: ProviderLineOutput): void {
    if (output.providerSessionId) this.providerSessionId = output.providerSessionId;
    if (output.totals) this.providerTotals = output.totals;
    this.emitAll(output.events ?? []);
    for (const approval of output.approvals ?? []) this.requestApproval(approval);
    this.act(output);
  }

  private requestApproval(approval: ApprovalRequest): void {
    if (this.finished) return;
    const approvalId = `apr_${randomUUID()}`;
    this.approvals.set(approvalId, approval);
    this.emit({
      kind: 'approval_requested',
      payload: {
        approval_id: approvalId,
        subject: approval.subject,
        details: { tool_input: approval.toolInput },
        expires_at: new Date(this.spec.now() + this.spec.approvalTimeoutMs).toISOString(),
      },
    });
  }

  protected emitAll(events: ProviderEvent[]): void {
    for (const event of events) this.emit(event);
  }

  /** The single gate every event passes: nothing gets out after the terminal event. */
  protected emit(event: ProviderEvent): void {
    if (this.finished) return;
    if (!TERMINAL_KINDS.has(event.kind)) {
      this.armIdleTimer();
      this.track(this.sink(event));
      return;
    }
    this.finished = true;
    this.track(this.sink(this.stampConversation(this.outcomeAfterInterrupt(event))));
    this.approvals.clear();
    this.clearTimers();
    this.windDown();
  }

  /** The turn is over: close the agent's input so it exits, and stop it if it is still there after exitGraceMs. */
  protected windDown(): void {
    this.endInput();
    this.later(this.grace.exitGraceMs, () => this.stopNow());
  }

  /** Counts an event the sink is still recording, pausing the agent's output while too many are. */
  private track(recording: void | Promise<unknown>): void {
    if (!recording) return;
    this.pendingEvents += 1;
    if (this.pendingEvents > MAX_PENDING_EVENTS && !this.outputPaused) {
      this.outputPaused = true;
      this.pauseOutput();
    }
    const settled = () => {
      this.pendingEvents -= 1;
      if (this.outputPaused && this.pendingEvents <= MAX_PENDING_EVENTS / 2) {
        this.outputPaused = false;
        this.resumeOutput();
      }
    };
    recording.then(settled, settled);
  }

  /** The conversation the agent holds now: its provider session id and the cumulative totals as of its latest line. */
  protected conversation(): { providerSessionId: string | null; totals: ProviderTotals | null } {
    return { providerSessionId: this.providerSessionId, totals: this.providerTotals };
  }

  /** After an interrupt only a successful result stands; any other ending is the interrupt's own error. */
  private outcomeAfterInterrupt(event: ProviderEvent): ProviderEvent {
    if (!this.interruptReason || event.kind === 'result') return event;
    if (this.interruptReason === 'deadline') {
      return terminalErrorEvent(new AsmError('timeout', `run exceeded its deadline of ${this.spec.deadlineMs}ms`));
    }
    if (this.interruptReason === 'idle') {
      return terminalErrorEvent(new AsmError('idle_timeout', `the agent printed nothing for ${this.spec.idleTimeoutMs}ms (idle_timeout_ms)`));
    }
    if (this.interruptReason === 'timeout') return terminalErrorEvent(new AsmError('timeout', 'run timed out'));
    return terminalErrorEvent(new AsmError('user_cancelled', 'Run interrupted'));
  }

  private stampConversation(event: ProviderEvent): ProviderEvent {
    const stamps = {
      ...(this.providerSessionId !== null && { provider_session_id: this.providerSessionId }),
      ...(this.providerTotals !== null && { provider_totals: this.providerTotals }),
    };
    return { ...event, payload: { ...event.payload, ...stamps } } as ProviderEvent;
  }

  /** A failure the agent cannot recover from: end the run now and stop the agent without grace. */
  protected fail(err: AsmError): void {
    this.emit(terminalErrorEvent(AsmError.from(err)));
    this.stopNow();
  }

  /** Provider code runs inside stream callbacks: a bug in it must fail this run, not crash the service. */
  protected safely(action: () => void): void {
    try {
      action();
    } catch (err) {
      this.fail(AsmError.from(err));
    }
  }

  private later(ms: number, action: () => void): void {
    // Beyond MAX_TIMEOUT_MS setTimeout fires at once; a deadline that long means "practically never".
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      action();
    }, Math.min(ms, MAX_TIMEOUT_MS));
    this.timers.add(timer);
  }

  private clearTimers(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

export function terminalErrorEvent(err: AsmError): ProviderEvent {
  return { kind: 'error', payload: err.toBody() };
}
