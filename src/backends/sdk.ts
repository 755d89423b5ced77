import { AsmError } from '../errors/kinds.js';
import type { ApprovalDecision, ApprovalRequest, ProviderLineOutput, SdkTurn } from '../providers/types.js';
import { withMcpServers } from './mcp-setup.js';
import { RunLifecycle, type GraceLimits, type LaunchedAgent } from './run-lifecycle.js';
import type { SdkLoader } from './sdk-loader.js';
import { spawnChild } from './spawn-child.js';
import type { Backend, BackendRun, BackendRunSpec, EventSink, Sandbox, SessionCli } from './types.js';

/**
 * The SDK backend (lane `sdk`): a run driven through the provider's vendor SDK
 * (ProviderDefinition.sdk), loaded on demand through the SdkLoader. RunLifecycle keeps the same
 * contract as the core lane (one terminal event, interrupts, deadline, approvals with ids and
 * expires_at, conversation stamps, winding down), and the provider maps the SDK's messages with its
 * core-lane mapper, so a run yields the same events on either lane.
 *
 *   load SDK ─► provider.sdk.run ─► run_started ─► reported output ─► the SDK's stream ends
 *
 * - run_started has the CLI the SDK drives as `command` and no args: the SDK builds its own argv.
 * - The interrupt is the SDK's own (SdkTurn.interrupt); closing the input winds the turn down
 *   (SdkTurn.endInput); stopping is the SDK's abort, which kills the CLI (SdkTurn.stop).
 * - Local only: lane resolution never sends remote_node work here.
 * - The SDK spawns the CLI itself, from the path and environment it is given: it gets the sandbox's
 *   launcher for this run (sandbox.ts), which starts the CLI in the same sandbox as the core lane.
 */

export class SdkBackend implements Backend {
  readonly name = 'sdk';

  constructor(
    private readonly sdks: SdkLoader,
    private readonly limits: GraceLimits,
    private readonly sandbox: Sandbox,
  ) {}

  start(spec: BackendRunSpec, sink: EventSink): BackendRun {
    return new SdkRun(spec, sink, this.sdks, this.limits, this.sandbox);
  }

  prepare(sessionId: string, cli?: SessionCli): void {
    this.sandbox.prepare(sessionId, cli);
  }
}

class SdkRun extends RunLifecycle {
  readonly done: Promise<void>;
  private turn: SdkTurn | null = null;

  constructor(
    spec: BackendRunSpec,
    sink: EventSink,
    private readonly sdks: SdkLoader,
    limits: GraceLimits,
    private readonly sandbox: Sandbox,
  ) {
    super(spec, sink, limits);
    this.done = this.run();
  }

  protected async launch(): Promise<LaunchedAgent> {
    // The SDK starts the CLI with its prompt: after the workspace's snapshot (BackendRunSpec.workspaceSnapshot).
    await this.spec.workspaceSnapshot?.();
    const spec = await withMcpServers(this.spec, this.sandbox);
    const sdk = spec.provider.sdk;
    if (!sdk) throw new AsmError('config_invalid', `lane: ${spec.provider.name} has no SDK lane`);
    const module = await this.sdks.load(spec.provider).catch((err: unknown) => {
      throw new AsmError('config_invalid', `lane: ${sdk.package} cannot be loaded: ${err instanceof Error ? err.message : String(err)}`);
    });
    const launcher = await this.sandbox.launcher(spec.sessionId, spec.runId, { command: spec.binary, cwd: spec.cwd, env: spec.env });
    let turn: SdkTurn;
    try {
      turn = this.turn = sdk.run(module, { ...spec, binary: launcher.command, env: launcher.env, spawn: spawnChild }, (output) => this.receive(() => output));
    } catch (err) {
      await launcher.dispose();
      throw err;
    }
    // Announced before the SDK's first message can arrive: its stream only delivers after an await.
    this.announce({ providerSessionId: turn.providerSessionId, args: [] });
    return {
      name: `${spec.provider.name} (SDK)`,
      ended: async () => {
        await turn.done;
        await launcher.dispose();
      },
    };
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

  protected endInput(): void {
    this.turn?.endInput();
  }

  // The SDK reads the CLI's output itself and hands over one message at a time; ASM cannot hold it
  // back, and a run's output quota (ASM_MAX_RUN_OUTPUT_BYTES) still bounds what it records.
  protected pauseOutput(): void {}

  protected resumeOutput(): void {}
}
