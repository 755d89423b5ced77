import { performance } from 'node:perf_hooks';
import type { Command, Execution } from './command.js';
import { laneErrors } from './errors.js';
import { LaneSchedulerCore } from './scheduler-core.js';
import type { EngineOptions } from './types.js';

export interface InProcessEngineOptions extends EngineOptions {
  /**
   * A/B parity with a3s-lane: dispatch at most one command every `tickMs` instead of on events.
   * Only for comparing ordering and timing with the Rust crate; it caps throughput at 1000/tickMs.
   */
  tickMs?: number;
}

/**
 * One dispatch pass starts at most this many commands, then yields to the event loop (setImmediate)
 * before going on: with synchronous handlers a single pass would otherwise work through the whole
 * backlog and starve timers and I/O for as long as that takes.
 */
const DISPATCH_BURST = 1024;

/**
 * The in-process lane engine: the shared scheduler (scheduler-core.ts; the dispatch rule is in
 * lane-choice.ts) with commands held in memory and run the moment they are granted a slot.
 *
 * Per command the hot path is a ring-buffer push and shift, an array-slot index entry, and the
 * handler call; nothing per command when nobody subscribes to events, and no timer unless the lane
 * has a timeout. A handler that returns a plain value completes synchronously, inside the pass.
 */
export class InProcessLaneEngine extends LaneSchedulerCore {
  private readonly tickMs: number | undefined;
  private ticker: NodeJS.Timeout | undefined;

  constructor(options: InProcessEngineOptions) {
    super(options, { burst: DISPATCH_BURST, requeueSlackMs: 0, keepsDeadLetters: true });
    if (options.tickMs !== undefined && !(options.tickMs > 0)) throw laneErrors.configInvalid('tickMs must be > 0');
    this.tickMs = options.tickMs;
    this.eventDriven = options.tickMs === undefined;
  }

  override start(): Promise<void> {
    const starting = super.start();
    // In tick mode start() dispatched nothing: the ticker owns dispatching.
    if (this.tickMs !== undefined && this.started && !this.closed) {
      this.ticker ??= setInterval(() => this.dispatchPass(1), this.tickMs);
    }
    return starting;
  }

  protected override teardown(): undefined {
    clearInterval(this.ticker);
    return undefined;
  }

  protected launch(command: Command): void {
    this.invoke(command, this.begin(command));
  }

  protected onSuccess(command: Command, run: Execution, value: unknown): void {
    if (command.run !== run) return; // timed out or closed meanwhile
    command.lane.latency.record(performance.now() - run.startedAt);
    this.commands.completed(command, value);
  }

  protected onFailure(command: Command, run: Execution, error: unknown, timedOut: boolean): void {
    if (command.run !== run) return;
    this.commands.failedAttempt(command, error, timedOut, this.commands.retrying(command, error));
  }
}
