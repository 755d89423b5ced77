import { AsmError } from '../errors.js';
import type { EventMetadata } from '../schemas/events.js';
import type { ProviderDefinition } from '../providers/types.js';

/**
 * Backend-lane resolution (SPEC §6), the one place that decides which lane a run executes on and why.
 * `requested_lane` is what the caller asked, `preferred_lane` what discovery picked (sdk when the
 * provider's SDK can be loaded), `lane` what executes. No SDK lane is wired yet, so every provider's
 * SDK is reported unavailable and an explicit `sdk` request is refused rather than silently downgraded.
 */

export type RequestedLane = 'auto' | 'core' | 'sdk';
export type ExecutionMode = 'local' | 'remote_node';

export interface LaneResolutionInput {
  provider: ProviderDefinition;
  requestedLane: RequestedLane;
  executionMode: ExecutionMode;
  /** Whether this service can run remote_node work (distributed mode). */
  remoteAvailable: boolean;
  node: string;
  queue: string;
}

export function resolveLane(input: LaneResolutionInput): EventMetadata {
  const { provider, requestedLane, executionMode } = input;
  const sdkAvailable = false;
  if (executionMode === 'remote_node' && !input.remoteAvailable) {
    throw new AsmError('config_invalid', 'execution_mode: remote_node needs distributed mode (REDIS_URL); this server is embedded', {
      details: { field: 'execution_mode', reason: 'distribution_disabled' },
    });
  }
  if (requestedLane === 'sdk') {
    throw new AsmError('config_invalid', `lane: the sdk lane was requested but no SDK is available for provider ${provider.name}`, {
      details: { field: 'lane', reason: 'sdk_unavailable' },
    });
  }
  return {
    requested_lane: requestedLane,
    preferred_lane: sdkAvailable ? 'sdk' : 'core',
    lane: 'core',
    backend: 'core',
    execution_mode: executionMode,
    lane_reason: requestedLane === 'core' ? 'explicit_core' : 'sdk_unavailable',
    lane_fallback_reason: null,
    sdk_runtime: null,
    sdk_available: sdkAvailable,
    capabilities: provider.capabilities,
    node: input.node,
    queue: input.queue,
  };
}
