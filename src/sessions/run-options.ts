import { AsmError } from '../errors/kinds.js';
import { assertAgentOptions, assertContinuation } from '../providers/agent-options.js';
import { defaultPermission, resolvePermission } from '../providers/permission-modes.js';
import type { ProviderDefinition, ProviderRunInput } from '../providers/types.js';
import type { Continuation } from '../schemas/agent-options.js';
import type { CreateRunBody, CreateSessionBody } from '../schemas/api.js';
import type { AgentRunOptions, SessionRecord } from '../store/types.js';

/**
 * The agent options (model, permission mode, guardrail, system prompt, turn limit, reasoning effort):
 * given on a session, overridden per run, key by key. Each layer is checked against its provider
 * (permission-modes.ts, agent-options.ts), so what a provider lacks is refused when it is asked for,
 * naming the field; a run gets its effective options fixed when it is submitted.
 */

export type SessionAgentFields = Pick<
  SessionRecord,
  'model' | 'permission_mode' | 'provider_permission_mode' | 'approval_posture' | 'allowed_tools' | 'system_prompt' | 'max_turns' | 'reasoning_effort'
>;

/** A new session's options, its provider's defaults where it gives none. */
export function sessionAgentOptions(provider: ProviderDefinition, body: CreateSessionBody): SessionAgentFields {
  assertAgentOptions(provider, body);
  const permission = resolvePermission(provider, body) ?? defaultPermission(provider);
  return {
    model: body.model ?? null,
    ...permission,
    allowed_tools: dedupe(body.allowed_tools ?? []),
    system_prompt: body.system_prompt ?? null,
    max_turns: body.max_turns ?? null,
    reasoning_effort: body.reasoning_effort ?? null,
  };
}

/** A run's effective options: what the run gives, else what its session has. */
export function runAgentOptions(provider: ProviderDefinition, session: SessionRecord, body: CreateRunBody): AgentRunOptions {
  assertAgentOptions(provider, body);
  assertContinuation(provider, body.continuation);
  const permission = resolvePermission(provider, body) ?? sessionPermission(session);
  return {
    model: body.model ?? session.model,
    permission_mode: permission.permission_mode,
    provider_permission_mode: permission.provider_permission_mode,
    allowed_tools: body.allowed_tools ? dedupe(body.allowed_tools) : session.allowed_tools,
    system_prompt: body.system_prompt ?? session.system_prompt,
    max_turns: body.max_turns ?? session.max_turns,
    reasoning_effort: body.reasoning_effort ?? session.reasoning_effort,
  };
}

/** A run's effective options as the body of a run that repeats it (a dead letter's retry). */
export function agentOptionsBody(agent: AgentRunOptions): Partial<CreateRunBody> {
  return {
    ...(agent.model !== null && { model: agent.model }),
    provider_permission_mode: agent.provider_permission_mode,
    allowed_tools: agent.allowed_tools,
    ...(agent.system_prompt !== null && { system_prompt: agent.system_prompt }),
    ...(agent.max_turns !== null && { max_turns: agent.max_turns }),
    ...(agent.reasoning_effort !== null && { reasoning_effort: agent.reasoning_effort }),
  };
}

function sessionPermission(session: SessionRecord): { permission_mode: string | null; provider_permission_mode: string } {
  return { permission_mode: session.permission_mode, provider_permission_mode: session.provider_permission_mode };
}

function dedupe(names: string[]): string[] {
  return [...new Set(names)];
}

/**
 * Which conversation a run continues (RunOptions.continuation): the session's own (true, when it has
 * one), a fresh one (false), the one named (with the session's totals when it is the session's own,
 * so its usage stays per run), or the CLI's latest.
 */
export function conversationOf(continuation: Continuation, session: SessionRecord): Pick<ProviderRunInput, 'providerSessionId' | 'previousTotals' | 'continueLatest'> {
  if (continuation === false) return {};
  if (continuation === true) {
    if (session.provider_session_id === null) return {};
    return { providerSessionId: session.provider_session_id, previousTotals: session.provider_totals ?? undefined };
  }
  if (continuation.strategy === 'latest') return { continueLatest: true };
  const own = continuation.provider_session_id === session.provider_session_id;
  return { providerSessionId: continuation.provider_session_id, previousTotals: own ? session.provider_totals ?? undefined : undefined };
}

/**
 * The allowed_tools guardrail: with a non-empty list, a tool_use of any other tool ends the run with
 * guardrail_blocked. allow_for_session grants never widen it (approvals.ts grants only listed tools).
 */
export function guardrailBlock(allowed: readonly string[], tool: string): AsmError | null {
  if (allowed.length === 0 || allowed.includes(tool)) return null;
  return new AsmError('guardrail_blocked', `the agent used the tool "${tool}", which is not in the run's allowed_tools (${allowed.join(', ')}); the run was stopped`, {
    details: { tool_name: tool, allowed_tools: [...allowed] },
  });
}
