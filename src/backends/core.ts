import { randomUUID } from 'node:crypto';
import type { Limits } from '../config.js';
import { AsmError } from '../errors.js';
import type {
  ApprovalDecision,
  ApprovalRequest,
  ProviderLineOutput,
  ProviderProcess,
  ProviderTotals,
} from '../providers/types.js';
import { TERMINAL_KINDS, type ProviderEvent } from '../schemas/events.js';
import { spawnSubprocess, type Subprocess } from './subprocess.js';
import type { Backend, BackendRun, BackendRunSpec, EventSink, InterruptReason } from './types.js';

/**
 * The core backend runs the provider's CLI as a local subprocess. The provider knows the CLI's
 * protocol (argv, line parsing, control messages); this file owns the run's life cycle:
 *
 *   spawn ─► run_started ─► provider lines ─► exactly one terminal event ─► stdin closed ─► process gone
 *
 * - Exactly one terminal event (result | error | run_completed), and nothing after it.
 * - After the terminal event stdin is closed so the CLI exits; if it is still there after
 *   exitGraceMs, it is stopped (SIGTERM, then SIGKILL after killGraceMs).
 * - A CLI that exits without a terminal line gets one from the provider's onExit (failed or
 *   interrupted, by exit status).
 * - Interrupt: the provider's own mechanism first (a control message or SIGINT); if the process is
 *   still there after interruptGraceMs, it is stopped. The terminal event of an interrupted run is the
 *   interrupt's error (user_cancelled, or timeout for deadline/timeout), unless the CLI got a
 *   successful `result` out first: finished work stands.
 * - The run's deadline (spec.deadlineMs) is an interrupt with reason 'deadline'.
 * - Approvals get an id here (apr_<uuid>) and are answered through decide(); a finished run drops them.
 * - The provider session id (known up front or learnt from the output) is stamped on the terminal
 *   event as `provider_session_id`, so continuation can rely on it; so are the conversation's latest
 *   cumulative totals, as `provider_totals`, which the next run of the conversation gets back.
 */

const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export type RunLimits = Pick<Limits, 'lineBytes' | 'stderrBytes' | 'interruptGraceMs' | 'killGraceMs' | 'exitGraceMs'>;

export class CoreBackend implements Backend {
  readonly name = 'core';

  constructor(private readonly limits: RunLimits) {}

  start(spec: BackendRunSpec, sink: EventSink): BackendRun {
    return new CoreRun(spec, sink, this.limits);
  }
}

class CoreRun implements BackendRun {
  readonly done: Promise<void>;
  private provider: ProviderProcess | null = null;
  private process: Subprocess | null = null;
  private finished = false;
  private interruptReason: InterruptReason | null = null;
  private providerSessionId: string | null;
  private providerTotals: ProviderTotals | null;
  private readonly approvals = new Map<string, ApprovalRequest>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly spec: BackendRunSpec,
    private readonly sink: EventSink,
    private readonly limits: RunLimits,
  ) {
    this.providerSessionId = spec.providerSessionId ?? null;
    // A run that learns nothing new leaves its conversation's totals as they were.
    this.providerTotals = spec.previousTotals ?? null;
    this.done = this.run();
  }

  async decide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<void> {
    const approval = this.approvals.get(approvalId);
    if (!approval) throw new AsmError('not_found', `approval ${approvalId} is not pending`);
    this.approvals.delete(approvalId);
    this.safely((provider) => this.apply(provider.decide(approval, decision, reason)));
  }

  async interrupt(reason: InterruptReason): Promise<void> {
    if (this.finished || this.interruptReason) return;
    this.interruptReason = reason;
    // Before the CLI is running there is nothing to tell; run() sends the interrupt once it is.
    if (this.process) this.sendInterrupt();
  }

  /** The whole run; never rejects. */
  private async run(): Promise<void> {
    const { spec } = this;
    this.later(spec.deadlineMs, () => void this.interrupt('deadline'));
    let provider: ProviderProcess;
    try {
      provider = this.provider = spec.provider.create(spec);
      this.process = await spawnSubprocess({
        command: spec.binary,
        args: provider.args,
        cwd: spec.cwd,
        env: spec.env,
        stdin: provider.stdin,
        limits: this.limits,
        onLine: (line) => {
          if (!this.finished) this.safely((p) => this.apply(p.onLine(line)));
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
    this.safely((p) => this.apply(p.start()));
    if (this.interruptReason && !this.finished) this.sendInterrupt();

    const exit = await this.process.closed;
    this.safely((p) => this.emitAll(p.onExit(exit, this.finished)));
    if (!this.finished) {
      // Only reachable if the provider breaks its contract; the run must still end.
      this.emit(errorEvent(new AsmError('transport_error', `${spec.provider.name} exited without a terminal event`)));
    }
    this.clearTimers();
  }

  private sendInterrupt(): void {
    this.safely((provider) => this.apply(provider.interrupt()));
    this.later(this.limits.interruptGraceMs, () => this.process?.stop());
  }

  /** Carry out what the provider asked for, in order: events, approvals, stdin, signal. */
  private apply(output: ProviderLineOutput): void {
    if (output.providerSessionId) this.providerSessionId = output.providerSessionId;
    if (output.totals) this.providerTotals = output.totals;
    this.emitAll(output.events ?? []);
    for (const approval of output.approvals ?? []) this.requestApproval(approval);
    for (const line of output.write ?? []) this.process?.write(line);
    if (output.endInput) this.process?.endInput();
    if (output.signal) this.process?.signalGroup(output.signal);
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
        expires_at: new Date(Date.now() + this.spec.approvalTimeoutMs).toISOString(),
      },
    });
  }

  private emitAll(events: ProviderEvent[]): void {
    for (const event of events) this.emit(event);
  }

  /** The single gate every event passes: nothing gets out after the terminal event. */
  private emit(event: ProviderEvent): void {
    if (this.finished) return;
    if (!TERMINAL_KINDS.has(event.kind)) {
      this.sink(event);
      return;
    }
    this.finished = true;
    this.sink(this.stampConversation(this.outcomeAfterInterrupt(event)));
    this.afterTerminal();
  }

  /** After an interrupt only a successful result stands; any other ending is the interrupt's own error. */
  private outcomeAfterInterrupt(event: ProviderEvent): ProviderEvent {
    if (!this.interruptReason || event.kind === 'result') return event;
    if (this.interruptReason === 'deadline') {
      return errorEvent(new AsmError('timeout', `run exceeded its deadline of ${this.spec.deadlineMs}ms`));
    }
    if (this.interruptReason === 'timeout') return errorEvent(new AsmError('timeout', 'run timed out'));
    return errorEvent(new AsmError('user_cancelled', 'Run interrupted'));
  }

  private stampConversation(event: ProviderEvent): ProviderEvent {
    const stamps = {
      ...(this.providerSessionId !== null && { provider_session_id: this.providerSessionId }),
      ...(this.providerTotals !== null && { provider_totals: this.providerTotals }),
    };
    return { ...event, payload: { ...event.payload, ...stamps } } as ProviderEvent;
  }

  private afterTerminal(): void {
    this.approvals.clear();
    this.clearTimers();
    this.process?.endInput();
    this.later(this.limits.exitGraceMs, () => this.process?.stop());
  }

  /** A failure the CLI cannot recover from: end the run now and stop the process without grace. */
  private fail(err: AsmError): void {
    this.emit(errorEvent(err));
    this.process?.stop();
  }

  /** Provider code runs inside stream callbacks: a bug in it must fail this run, not crash the service. */
  private safely(action: (provider: ProviderProcess) => void): void {
    try {
      action(this.provider!);
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
  }
}

function errorEvent(err: AsmError): ProviderEvent {
  return { kind: 'error', payload: err.toBody() };
}
