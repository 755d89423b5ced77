import { AsmError } from '../errors/kinds.js';
import { remoteFailure } from '../errors/remote-start-failures.js';
import type { SdkStatus } from '../backends/sdk-loader.js';
import type { EventMetadata } from '../schemas/events.js';
import type { ProviderDefinition } from '../providers/types.js';

/**
 * Backend resolution: the one place that decides which backend (the API's `lane`: core or sdk) a
 * run executes on and why. Every event's and result's metadata carries the answer:
 *
 * | requested | SDK loadable | execution_mode | preferred | lane | lane_reason     | fallback               |
 * |-----------|--------------|----------------|-----------|------|-----------------|------------------------|
 * | auto      | yes          | local          | sdk       | sdk  | sdk_available   | null                   |
 * | auto      | no           | any            | core      | core | sdk_unavailable | null                   |
 * | auto      | yes          | remote_node    | sdk       | core | sdk_available   | sdk_remote_unsupported |
 * | auto      | yes, lacking a needed capability | local | sdk | core | sdk_available | sdk_capability_missing |
 * | core      | (not probed) | any            | core      | core | explicit_core   | null                   |
 * | sdk       | yes          | local          | sdk       | sdk  | explicit_sdk    | null                   |
 * | sdk       | yes          | remote_node    | config_invalid (unsupported_execution_mode)                        |
 * | sdk       | no           | any            | config_invalid (sdk_unavailable), never a silent fallback          |
 * | sdk       | yes, lacking a needed capability | any | config_invalid (sdk_capability_missing)          |
 *
 * "SDK loadable" means the package imports and the CLI it drives is found (placement.ts). A session
 * needs capabilities by its options (ProviderDefinition.laneNeeds: codex's asking modes need
 * `approvals`, which its SDK lane lacks); `missing_capabilities` names those the SDK lane lacks,
 * whichever lane ran. remote_node on a server that cannot distribute work is refused first
 * (distribution_disabled).
 */

export type RequestedBackend = 'auto' | 'core' | 'sdk';
export type ExecutionMode = 'local' | 'remote_node';

export interface BackendResolutionInput {
  provider: ProviderDefinition;
  requestedBackend: RequestedBackend;
  executionMode: ExecutionMode;
  /** Whether this service can run remote_node work. */
  remoteAvailable: boolean;
  /** The provider's SDK as discovered; null when it was not probed (`lane: core` never probes). */
  sdk: SdkStatus | null;
  /** What the session's options need of its lane (ProviderDefinition.laneNeeds). */
  needs: readonly string[];
  node: string;
  queue: string;
}

/** Whether resolving this request needs the SDK probed: `core` never does, nor a provider without an SDK lane. */
export function needsSdkProbe(provider: ProviderDefinition, requestedBackend: RequestedBackend): boolean {
  return requestedBackend !== 'core' && provider.sdk !== undefined;
}

export function resolveBackend(input: BackendResolutionInput): EventMetadata {
  const { provider, requestedBackend, executionMode } = input;
  if (executionMode === 'remote_node' && !input.remoteAvailable) {
    throw remoteFailure('distribution_disabled', 'execution_mode: remote_node needs worker nodes of a distributed deployment; this server has none', {
      field: 'execution_mode',
    });
  }
  const sdkAvailable = input.sdk?.available === true && provider.sdk !== undefined;
  const missing = provider.sdk ? input.needs.filter((need) => !provider.sdk!.capabilities.includes(need)) : [];
  if (requestedBackend === 'sdk') {
    if (!sdkAvailable) {
      const why = provider.sdk ? `${provider.sdk.package} cannot be loaded here${input.sdk?.error ? ` (${input.sdk.error})` : ''}` : `${provider.name} has no SDK lane`;
      throw new AsmError('config_invalid', `lane: the sdk lane was requested but ${why}`, { details: { field: 'lane', reason: 'sdk_unavailable' } });
    }
    if (executionMode === 'remote_node') {
      throw new AsmError('config_invalid', 'lane: the sdk lane is unavailable for remote_node execution; use lane core or auto', {
        details: { field: 'lane', reason: 'unsupported_execution_mode' },
      });
    }
    if (missing.length > 0) {
      throw new AsmError('config_invalid', `lane: the ${provider.name} sdk lane lacks ${missing.join(', ')}, which this session needs (permission_mode); use lane core or auto`, {
        details: { field: 'lane', reason: 'sdk_capability_missing', missing_capabilities: missing },
      });
    }
  }
  const preferred = sdkAvailable ? 'sdk' : 'core';
  const lane = requestedBackend === 'core' || !sdkAvailable || executionMode === 'remote_node' || missing.length > 0 ? 'core' : 'sdk';
  const laneReason = requestedBackend === 'core' ? 'explicit_core' : requestedBackend === 'sdk' ? 'explicit_sdk' : sdkAvailable ? 'sdk_available' : 'sdk_unavailable';
  return {
    requested_lane: requestedBackend,
    preferred_lane: requestedBackend === 'core' ? 'core' : preferred,
    lane,
    backend: lane,
    execution_mode: executionMode,
    lane_reason: laneReason,
    lane_fallback_reason: requestedBackend === 'auto' && sdkAvailable && lane === 'core' ? (executionMode === 'remote_node' ? 'sdk_remote_unsupported' : 'sdk_capability_missing') : null,
    sdk_runtime: lane === 'sdk' ? input.sdk!.runtime : null,
    sdk_available: requestedBackend === 'core' ? false : sdkAvailable,
    capabilities: lane === 'sdk' ? provider.sdk!.capabilities : provider.capabilities,
    missing_capabilities: requestedBackend === 'core' ? [] : missing,
    node: input.node,
    queue: input.queue,
  };
}
