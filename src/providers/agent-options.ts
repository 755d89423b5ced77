import { AsmError } from '../errors/kinds.js';
import type { Continuation } from '../schemas/agent-options.js';
import type { ProviderDefinition } from './types.js';

/**
 * The seeds' session options a provider may or may not pass to its CLI (system_prompt, max_turns,
 * reasoning_effort, continuation), checked against what the provider declares in
 * ProviderDefinition.options, so an option a CLI would ignore is refused instead (config_invalid
 * naming the field and the provider). How each CLI takes them is in the provider's own file. Not a
 * provider (the registry skips it).
 */

export interface AgentOptionsRequest {
  system_prompt?: string;
  max_turns?: number;
  reasoning_effort?: string;
}

function refuse(field: string, provider: string, message: string): AsmError {
  return new AsmError('config_invalid', `${field}: ${message}`, { details: { field, provider } });
}

/** Each option the layer gives must be one the provider takes, with a value its CLI accepts. */
export function assertAgentOptions(provider: ProviderDefinition, request: AgentOptionsRequest): void {
  const support = provider.options;
  if (request.system_prompt !== undefined && !support.system_prompt) {
    throw refuse('system_prompt', provider.name, `${provider.name} takes no system prompt`);
  }
  if (request.max_turns !== undefined && !support.max_turns) {
    throw refuse('max_turns', provider.name, `${provider.name} has no turn limit`);
  }
  if (request.reasoning_effort !== undefined) {
    const levels = support.reasoning_effort ?? [];
    if (levels.length === 0) throw refuse('reasoning_effort', provider.name, `${provider.name} has no reasoning effort setting`);
    if (!levels.includes(request.reasoning_effort)) {
      throw refuse('reasoning_effort', provider.name, `${provider.name} takes ${levels.join(', ')}, not "${request.reasoning_effort}"`);
    }
  }
}

/**
 * A provider session id given by the caller goes into argv (after the flag that takes it): it must
 * not read as a flag, carry control characters or surrounding space (the rules of asm.md §8.2).
 */
const PROVIDER_SESSION_ID = /^(?!-)[^\s\p{Cc}](?:[^\p{Cc}]*[^\s\p{Cc}])?$/u;

export function assertContinuation(provider: ProviderDefinition, continuation: Continuation | undefined): void {
  if (continuation === undefined || typeof continuation === 'boolean') return;
  if (continuation.strategy === 'latest') {
    if (!provider.options.continuation_latest) throw refuse('continuation', provider.name, `${provider.name} cannot continue its latest conversation; give its id`);
    return;
  }
  if (!provider.capabilities.includes('continuation')) throw refuse('continuation', provider.name, `${provider.name} has no conversation to continue`);
  const id = continuation.provider_session_id;
  if (!PROVIDER_SESSION_ID.test(id) || Buffer.byteLength(id) > 512) {
    throw refuse('continuation.provider_session_id', provider.name, 'must be at most 512 bytes, not start with "-", and hold no control characters or surrounding spaces');
  }
}
