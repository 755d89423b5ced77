import type { Limits } from '../config.js';
import { AsmError } from '../errors.js';
import type { ApprovalDecision, ApprovalRequest, ProviderLineOutput, SdkTurn } from '../providers/types.js';
import { errorEvent, RunLifecycle } from './run-lifecycle.js';
import type { SdkLoader } from './sdk-loader.js';
import type { Backend, BackendRun, BackendRunSpec, EventSink } from './types.js';

/**
 * The SDK backend (SPEC §6, lane `sdk`): a run driven through the provider's vendor SDK
 * (ProviderDefinition.sdk), loaded on demand through the SdkLoader. RunLifecycle keeps the same
 * contract as the core lane (one terminal event, interrupts, deadline, approvals with ids and
 * expires_at, conversation stamps), and the provider maps the SDK's messages with its core-lane
 * mapper, so a run yields the same events on either lane.
 *
 *   load SDK ─► provider.sdk.run ─► run_started ─► reported output ─► one terminal event ─► turn wound down
 *
 * - run_started has the CLI the SDK drives as `command` and no args: the SDK builds its own argv.
 * - Interrupt: the SDK's own interrupt first (SdkTurn.interrupt); if the turn has not ended after
 *   interruptGraceMs, it is stopped (the SDK's abort kills the CLI).
 * - After the terminal event the turn is wound down (endInput); if the SDK's stream has not ended
 *   after exitGraceMs, it is stopped.
 * - Local only: lane resolution never sends remote_node work here.
 */

export type SdkRunLimits = Pick<Limits, 'interruptGraceMs' | 'exitGraceMs'>;

export class SdkBackend implements Backend {
  readonly name = 'sdk';

  constructor(
    private readonly sdks: SdkLoader,
    private readonly limits: SdkRunLimits,
  ) {}

  start(spec: BackendRunSpec, sink: EventSink): BackendRun {
    return new SdkRun(spec, sink, this.sdks, this.limits);
  }
}

class SdkRun extends RunLifecycle {
  readonly done: Promise<void>;
  private turn: SdkTurn | null = null;

  constructor(
    spec: BackendRunSpec,
    sink: EventSink,
    private readonly sdks: SdkLoader,
    private readonly limits: SdkRunLimits,
  ) {
    super(spec, sink, limits.interruptGraceMs);
    this.done = this.run();
  }

  /** The whole run; never rejects. */
  private async run(): Promise<void> {
    const { spec } = this;
    this.startDeadline();
    let turn: SdkTurn;
    try {
      const sdk = spec.provider.sdk;
      if (!sdk) throw new AsmError('config_invalid', `lane: ${spec.provider.name} has no SDK lane`);
      const module = await this.sdks.load(spec.provider).catch((err: unknown) => {
        throw new AsmError('config_invalid', `lane: ${sdk.package} cannot be loaded: ${err instanceof Error ? err.message : String(err)}`);
      });
      turn = this.turn = sdk.run(module, spec, (output) => {
        if (!this.finished) this.safely(() => this.apply(output));
      });
    } catch (err) {
      this.emit(errorEvent(AsmError.from(err)));
      this.clearTimers();
      return;
    }

    this.providerSessionId = turn.providerSessionId ?? this.providerSessionId;
    // Emitted before the SDK's first message can arrive: its stream only delivers after an await.
    this.emit({
      kind: 'run_started',
      payload: { provider_session_id: this.providerSessionId, command: spec.binary, args: [], cwd: spec.cwd, node: spec.node },
    });
    this.markReachable();
    await turn.done;
    if (!this.finished) {
      // Only reachable if the provider breaks its contract; the run must still end.
      this.emit(errorEvent(new AsmError('transport_error', `${spec.provider.name} (SDK) ended without a terminal event`)));
    }
    this.clearTimers();
  }

  protected answer(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null): void {
    this.turn!.decide(approval, decision, reason);
  }

  protected askToStop(): void {
    this.turn!.interrupt();
  }

  protected stopNow(): void {
    this.turn?.stop();
  }

  /** The SDK owns the CLI's stdin and signals; the only process action a mapping asks for is winding down. */
  protected act(output: ProviderLineOutput): void {
    if (output.endInput) this.turn?.endInput();
  }

  protected release(): void {
    this.turn?.endInput();
    this.later(this.limits.exitGraceMs, () => this.turn?.stop());
  }
}
