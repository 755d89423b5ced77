import { Type, type Static } from '@sinclair/typebox';

/**
 * The agent options of the API: what a session sets for its runs and a run may override
 * (sessions/run-options.ts resolves them, each provider's file says how its CLI takes them).
 */

const PermissionModeField = Type.String({
  minLength: 1,
  maxLength: 64,
  description:
    'default | auto | bypass | plan, or an alias (accept_edits, delegate, dont_ask, auto_edit → auto; bypass_permissions, yolo, force, ' +
    'dangerously_allow_all, dangerously_skip_permissions → bypass), case-insensitive. Each provider maps it to its own mode (README "Providers")',
});
const ProviderPermissionModeField = Type.String({ minLength: 1, maxLength: 64, description: "The provider's own mode name (escape hatch); see GET /v1/providers" });
const ApprovalPostureField = Type.Union([Type.Literal('manual'), Type.Literal('auto'), Type.Literal('none')], {
  description: 'Without permission_mode: manual → default, auto → auto; none is refused (nobody would decide)',
});
const ToolName = Type.String({ minLength: 1, maxLength: 128 });
const AllowedToolsField = Type.Array(ToolName, {
  maxItems: 256,
  description: "Guardrail: when not empty, a tool_use of any other tool (the provider's tool names) ends the run with guardrail_blocked",
});

/** The options a session sets for its runs and a run may override (session-options.ts resolves them). */
export const AgentOptionFields = {
  model: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  permission_mode: Type.Optional(PermissionModeField),
  provider_permission_mode: Type.Optional(ProviderPermissionModeField),
  approval_posture: Type.Optional(ApprovalPostureField),
  allowed_tools: Type.Optional(AllowedToolsField),
  system_prompt: Type.Optional(Type.String({ minLength: 1, maxLength: 65_536, description: 'claude: --system-prompt; codex: developer instructions' })),
  max_turns: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'claude: --max-turns' })),
  reasoning_effort: Type.Optional(Type.String({ minLength: 1, maxLength: 32, description: 'claude: low…max; codex: none…xhigh' })),
};

export const Continuation = Type.Union(
  [
    Type.Boolean({ description: "true (default): continue the session's conversation when it has one; false: a new one" }),
    Type.Object({ strategy: Type.Literal('exact'), provider_session_id: Type.String({ minLength: 1, maxLength: 512 }) }, { additionalProperties: false }),
    Type.Object({ strategy: Type.Literal('latest') }, { additionalProperties: false, description: "The CLI's most recent conversation (claude, gemini)" }),
  ],
  { description: 'Which provider conversation the run continues' },
);
export type Continuation = Static<typeof Continuation>;

