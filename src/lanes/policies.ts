import { laneErrors } from './errors.js';
import type { EngineOptions, LaneConfig, PriorityBoost, RateLimit, RetryPolicy } from './types.js';

/**
 * Lane configuration: the default lane table, policy constructors with a3s-lane's defaults, the
 * pure math engines apply, and validation. Nothing here holds state.
 */

export const retry = {
  /** 100 ms, doubling, capped at 30 s; no jitter. */
  exponential: (maxRetries: number): RetryPolicy => ({
    maxRetries,
    initialDelayMs: 100,
    maxDelayMs: 30_000,
    multiplier: 2,
  }),
  fixed: (maxRetries: number, delayMs: number): RetryPolicy => ({
    maxRetries,
    initialDelayMs: delayMs,
    maxDelayMs: delayMs,
    multiplier: 1,
  }),
  none: (): RetryPolicy => ({ maxRetries: 0, initialDelayMs: 0, maxDelayMs: 0, multiplier: 1 }),
};

/**
 * Delay before retry k (1-based): initial × multiplier^(k−1), truncated to whole ms, capped at
 * maxDelayMs; 0 for k = 0 or a policy without retries.
 */
export function retryDelayMs(policy: RetryPolicy, k: number): number {
  if (k <= 0 || policy.maxRetries === 0) return 0;
  const delay = Math.floor(policy.initialDelayMs * policy.multiplier ** (k - 1));
  return Math.min(delay, policy.maxDelayMs);
}

export const rateLimit = {
  perSecond: (maxCommands: number): RateLimit => ({ maxCommands, windowMs: 1000 }),
  perMinute: (maxCommands: number): RateLimit => ({ maxCommands, windowMs: 60_000 }),
  perHour: (maxCommands: number): RateLimit => ({ maxCommands, windowMs: 3_600_000 }),
};

/** Builds intervals from [fraction of the deadline remaining, boost] steps, largest threshold first. */
function steps(deadlineMs: number, fractions: Array<[number, number]>): PriorityBoost {
  return { deadlineMs, intervals: fractions.map(([fraction, amount]) => [deadlineMs * fraction, amount]) };
}

export const boost = {
  /** +1 at ≤75% of the deadline remaining, +2 at ≤50%, +3 at ≤25%, +4 at ≤10%. */
  standard: (deadlineMs: number): PriorityBoost =>
    steps(deadlineMs, [
      [0.75, 1],
      [0.5, 2],
      [0.25, 3],
      [0.1, 4],
    ]),
  /** +2 at ≤80% remaining, +4 at ≤60%, +6 at ≤40%, +8 at ≤20%. */
  aggressive: (deadlineMs: number): PriorityBoost =>
    steps(deadlineMs, [
      [0.8, 2],
      [0.6, 4],
      [0.4, 6],
      [0.2, 8],
    ]),
  /** The contract has no "enabled" flag: a lane without a boost is a lane whose boost is disabled. */
  disabled: (): PriorityBoost | undefined => undefined,
};

/**
 * The priority a lane competes with, given the submit time of its head command. Past the deadline
 * the lane jumps to 0, the top; otherwise the last interval whose threshold the remaining time is
 * within sets the boost (intervals are ordered largest threshold first, so that is the tightest
 * one), and the result never goes below 0.
 */
export function effectivePriority(
  base: number,
  laneBoost: PriorityBoost | undefined,
  headSubmittedAt: number,
  now: number,
): number {
  if (laneBoost === undefined) return base;
  const remaining = headSubmittedAt + laneBoost.deadlineMs - now;
  if (remaining <= 0) return 0;
  let amount = 0;
  for (const [threshold, step] of laneBoost.intervals) {
    if (remaining <= threshold) amount = step;
  }
  return Math.max(0, base - amount);
}

/** a3s-lane's default lane table: no timeout, retry, rate limit or boost. */
export const DEFAULT_LANES: readonly LaneConfig[] = Object.freeze(
  [
    { id: 'system', priority: 0, minConcurrency: 1, maxConcurrency: 5 },
    { id: 'control', priority: 1, minConcurrency: 1, maxConcurrency: 3 },
    { id: 'query', priority: 2, minConcurrency: 1, maxConcurrency: 10 },
    { id: 'session', priority: 3, minConcurrency: 1, maxConcurrency: 5 },
    { id: 'skill', priority: 4, minConcurrency: 1, maxConcurrency: 3 },
    { id: 'prompt', priority: 5, minConcurrency: 1, maxConcurrency: 2 },
  ].map((lane) => Object.freeze(lane)),
);

/**
 * The default lanes that carry the long-running work an application submits on its callers' behalf
 * (ASM's agent runs). The other defaults (system, control, session, query) carry short commands that
 * must never wait behind such work, so no configuration opens them to it; a custom lane carries it
 * only when marked `runs: true`.
 */
export const DEFAULT_RUN_LANES: readonly string[] = Object.freeze(['skill', 'prompt']);

/** A lane of ASM_LANES: lane config fields, and `runs` to mark a custom lane as a run lane. */
export type LaneOverride = Partial<LaneConfig> & { id: string; runs?: boolean };

/**
 * Custom lanes replace or extend the defaults. An override with a default's id is laid over it
 * field by field and keeps its position (registration order breaks priority ties), so a complete
 * config replaces the default and a partial one adjusts it; an override with a new id is appended
 * and needs at least priority and maxConcurrency (minConcurrency defaults to 1, as in a3s-lane).
 * The result is validated; `runs` marks are checked and left out of the lane configs (see runLanes).
 */
export function mergeLanes(defaults: readonly LaneConfig[], overrides: readonly LaneOverride[]): LaneConfig[] {
  runLanes(overrides);
  const configs = overrides.map(({ runs: _mark, ...lane }) => lane);
  const byId = new Map(configs.map((lane) => [lane.id, lane]));
  const known = new Set(defaults.map((lane) => lane.id));
  const merged = [
    ...defaults.map((lane) => ({ ...lane, ...byId.get(lane.id) })),
    ...configs.filter((lane) => !known.has(lane.id)).map((lane) => ({ minConcurrency: 1, ...lane }) as LaneConfig),
  ];
  validateLanes(merged);
  return merged;
}

/**
 * The lanes that may carry runs: DEFAULT_RUN_LANES and the custom lanes marked `runs: true`. A mark
 * on a default lane is refused: their roles are fixed.
 */
export function runLanes(overrides: readonly LaneOverride[]): Set<string> {
  const lanes = new Set(DEFAULT_RUN_LANES);
  const defaults = new Set(DEFAULT_LANES.map((lane) => lane.id));
  for (const { id, runs } of overrides) {
    if (runs === undefined) continue;
    if (typeof runs !== 'boolean') throw laneErrors.configInvalid(`lane "${id}": runs must be true or false`);
    if (defaults.has(id)) {
      throw laneErrors.configInvalid(`lane "${id}": runs cannot be set on a default lane (${DEFAULT_RUN_LANES.join(' and ')} carry runs, the others never do)`);
    }
    if (runs) lanes.add(id);
  }
  return lanes;
}

const isCount = (value: number, min: number) => Number.isInteger(value) && value >= min;
const isPositive = (value: number) => Number.isFinite(value) && value > 0;

/**
 * Rejects the configurations a3s-lane accepted silently (src/lanes/README.md, "a3s-lane defects
 * fixed"): min > max, a lane that can never run (max < 1), a pressure threshold that flaps (< 1),
 * duplicate ids that used to replace a lane and drop its work. The message names the lane and the
 * field.
 */
export function validateLanes(configs: readonly LaneConfig[]): void {
  if (configs.length === 0) throw laneErrors.configInvalid('at least one lane is required');
  const seen = new Set<string>();
  for (const lane of configs) {
    const fail = (field: string, problem: string) => {
      throw laneErrors.configInvalid(`lane "${lane.id}": ${field} ${problem}`);
    };
    if (typeof lane.id !== 'string' || lane.id === '') fail('id', 'must be a non-empty string');
    if (seen.has(lane.id)) fail('id', 'is duplicated');
    seen.add(lane.id);
    if (!isCount(lane.priority, 0)) fail('priority', `must be an integer >= 0 (got ${lane.priority})`);
    if (!isCount(lane.maxConcurrency, 1)) fail('maxConcurrency', `must be an integer >= 1 (got ${lane.maxConcurrency})`);
    if (!isCount(lane.minConcurrency, 0)) fail('minConcurrency', `must be an integer >= 0 (got ${lane.minConcurrency})`);
    if (lane.minConcurrency > lane.maxConcurrency) {
      fail('minConcurrency', `(${lane.minConcurrency}) exceeds maxConcurrency (${lane.maxConcurrency})`);
    }
    if (lane.clusterMaxConcurrency !== undefined && !isCount(lane.clusterMaxConcurrency, 1)) {
      fail('clusterMaxConcurrency', `must be an integer >= 1 (got ${lane.clusterMaxConcurrency})`);
    }
    if (lane.timeoutMs !== undefined && !isPositive(lane.timeoutMs)) fail('timeoutMs', 'must be > 0');
    if (lane.pressureThreshold !== undefined && !isCount(lane.pressureThreshold, 1)) {
      fail('pressureThreshold', `must be an integer >= 1 (got ${lane.pressureThreshold})`);
    }
    if (lane.maxPending !== undefined && !isCount(lane.maxPending, 1)) {
      fail('maxPending', `must be an integer >= 1 (got ${lane.maxPending})`);
    }
    if (lane.retry !== undefined) {
      const { maxRetries, initialDelayMs, maxDelayMs, multiplier } = lane.retry;
      if (!isCount(maxRetries, 0)) fail('retry.maxRetries', 'must be an integer >= 0');
      if (!(initialDelayMs >= 0) || !(maxDelayMs >= 0)) fail('retry', 'delays must be >= 0');
      if (!isPositive(multiplier)) fail('retry.multiplier', 'must be > 0');
    }
    if (lane.rateLimit !== undefined) {
      if (!isCount(lane.rateLimit.maxCommands, 1)) fail('rateLimit.maxCommands', 'must be an integer >= 1');
      if (!isPositive(lane.rateLimit.windowMs)) fail('rateLimit.windowMs', 'must be > 0');
    }
    if (lane.boost !== undefined && !isPositive(lane.boost.deadlineMs)) fail('boost.deadlineMs', 'must be > 0');
  }
}

export function validateEngineOptions(options: EngineOptions): void {
  validateLanes(options.lanes);
  const { globalConcurrency, dlqSize } = options;
  if (globalConcurrency !== undefined && !isCount(globalConcurrency, 1)) {
    throw laneErrors.configInvalid(`globalConcurrency must be an integer >= 1 (got ${globalConcurrency})`);
  }
  if (dlqSize !== undefined && !isCount(dlqSize, 0)) {
    throw laneErrors.configInvalid(`dlqSize must be an integer >= 0 (got ${dlqSize})`);
  }
}
