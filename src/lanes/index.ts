/**
 * The lane engine as a library: priority lanes of JSON commands routed to handlers by type. It
 * knows nothing about agents. See src/lanes/README.md.
 */
import { InProcessLaneEngine, type InProcessEngineOptions } from './memory-engine.js';
import type { LaneEngine } from './types.js';

export * from './types.js';
export { DEFAULT_LANES, DEFAULT_RUN_LANES, runLanes, mergeLanes, validateLanes, validateEngineOptions, retry, retryDelayMs, rateLimit, boost, effectivePriority } from './policies.js';
export type { LaneOverride } from './policies.js';
export { formatDuration } from './errors.js';
export { InProcessLaneEngine, type InProcessEngineOptions } from './memory-engine.js';

export function createInProcessEngine(options: InProcessEngineOptions): LaneEngine {
  return new InProcessLaneEngine(options);
}
