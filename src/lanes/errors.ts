import { LaneError } from './types.js';

/**
 * The engine's own errors, built in one place so that every engine prints the same text. The
 * messages that a3s-lane also produces keep its wording (its Rust `Display` strings), because
 * clients already match on them.
 */

/**
 * A duration in Rust's `Duration` Debug format (`50ms`, `5s`, `1.5s`, `100µs`), which is what
 * a3s-lane prints in "Command timed out after …".
 */
export function formatDuration(ms: number): string {
  if (ms >= 1000) return `${trim(ms / 1000)}s`;
  if (ms >= 1) return `${trim(ms)}ms`;
  if (ms * 1000 >= 1) return `${trim(ms * 1000)}µs`;
  return `${trim(ms * 1e6)}ns`;
}

/** Drops float noise (0.30000000000000004) without printing trailing zeros. */
function trim(value: number): string {
  return String(Number(value.toFixed(9)));
}

export const laneErrors = {
  laneNotFound: (id: string) => new LaneError('lane_not_found', `Lane not found: ${id}`),
  shuttingDown: () => new LaneError('shutdown_in_progress', 'Queue is shutting down, not accepting new commands'),
  timeout: (ms: number) => new LaneError('timeout', `Command timed out after ${formatDuration(ms)}`),
  /** a3s-lane reused the command-timeout text here; a drain timeout now says what it is. */
  drainTimeout: (ms: number) => new LaneError('drain_timeout', `Drain timed out after ${formatDuration(ms)}`),
  queueFull: (lane: string, maxPending: number) =>
    new LaneError('queue_full', `Queue error: lane ${lane} is full (${maxPending} pending)`),
  cancelled: (reason?: string) => new LaneError('cancelled', reason ? `Command cancelled: ${reason}` : 'Command cancelled'),
  unknownCommandType: (type: string) =>
    new LaneError('unknown_command_type', `No handler registered for command type: ${type}`),
  /**
   * The contract has no dedicated code for a missing dead letter; `lane_not_found` is its only
   * "not found" code, and the message says what was actually missing.
   */
  deadLetterNotFound: (id: string) => new LaneError('lane_not_found', `Dead letter not found: ${id}`),
  unavailable: (ms: number) =>
    new LaneError('unavailable', `Store unavailable: no answer from Redis within ${formatDuration(ms)}`),
  configInvalid: (message: string) => new LaneError('config_invalid', `Configuration error: ${message}`),
};

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** For what is deliberately ignored: a result nobody reads, an error event, a placeholder handler. */
export const noop = () => {};
