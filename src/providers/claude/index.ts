/** The Claude Code provider: its binary, environment, modes and capabilities, and its two lanes. */
import { jsonServers } from '../mcp.js';
import type { ProviderDefinition } from '../types.js';
import { CLAUDE_HOME_SETUP, CLAUDE_MCP_FILE, createClaudeProcess } from './process.js';
import { runClaudeSdk } from './sdk.js';

/**
 * `claude`: Claude Code in bidirectional stream-json mode (docs/protocols.md, "## Claude Code"):
 * process.ts runs the CLI on the core lane, sdk.ts through the Agent SDK; both map its messages with
 * mapper.ts (result lines in result.ts) and answer approvals as control.ts says.
 */

const claude: ProviderDefinition = {
  name: 'claude',
  displayName: 'Claude Code',
  defaultBinary: 'claude',
  install: 'npm install -g @anthropic-ai/claude-code',
  // Auth, endpoint and model overrides. Cloud credentials for Bedrock or Vertex (AWS_*, Google ADC)
  // are the operator's choice: pass them with ASM_PASS_ENV.
  env: [
    'ANTHROPIC_API_KEY',
    'CLAUDE_CODE_OAUTH_TOKEN',
    'ANTHROPIC_AUTH_TOKEN',
    'ANTHROPIC_BASE_URL',
    'ANTHROPIC_CUSTOM_HEADERS',
    'ANTHROPIC_MODEL',
    'ANTHROPIC_DEFAULT_OPUS_MODEL',
    'ANTHROPIC_DEFAULT_SONNET_MODEL',
    'ANTHROPIC_DEFAULT_HAIKU_MODEL',
    'CLAUDE_CODE_USE_BEDROCK',
    'CLAUDE_CODE_USE_VERTEX',
    'ANTHROPIC_VERTEX_PROJECT_ID',
    'CLAUDE_CODE_USE_FOUNDRY',
    'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC',
    'DISABLE_AUTOUPDATER',
  ],
  defaultQueue: 'prompt',
  // warm: a warm session's runs share one CLI process (process.ts, backends/warm-processes.ts);
  // prewarm: a new session's CLI may start before its first run (ASM_PREWARM, backends/core.ts).
  capabilities: ['approvals', 'interrupt', 'continuation', 'usage', 'cost', 'warm', 'prewarm'],
  // The one permission-mode table (permission-modes.ts). 'auto' (the classifier) and 'dontAsk' are
  // reachable through provider_permission_mode.
  permissionModes: { default: 'default', auto: 'acceptEdits', bypass: 'bypassPermissions', plan: 'plan' },
  nativePermissionModes: ['default', 'acceptEdits', 'bypassPermissions', 'plan', 'dontAsk', 'auto'],
  // --system-prompt, --max-turns, --effort, --continue (the SDK lane: the same as options).
  options: { system_prompt: true, max_turns: true, reasoning_effort: ['low', 'medium', 'high', 'xhigh', 'max'], continuation_latest: true },
  sdk: {
    package: '@anthropic-ai/claude-agent-sdk',
    // Only what a route serves: session_resume is a run's `continuation` by the SDK's resume option.
    capabilities: ['approvals', 'interrupt', 'continuation', 'usage', 'cost', 'session_resume'],
    run: runClaudeSdk,
  },
  // `--mcp-config <file>` (process.ts, sdk.ts): the secrets stay in the file.
  mcp: { files: (servers) => [{ name: CLAUDE_MCP_FILE, content: JSON.stringify({ mcpServers: jsonServers(servers, 'url', { stdio: { type: 'stdio' }, http: { type: 'http' } }) }) }] },
  versionArgs: ['--version'],
  homeSetup: CLAUDE_HOME_SETUP,
  create: createClaudeProcess,
};

export default claude;
