/** The Codex CLI provider: its binary, environment, modes and capabilities, and the transport per mode. */
import type { ProviderDefinition, ProviderProcess, ProviderRunInput } from '../types.js';
import { APP_SERVER_HOME_SETUP, createAppServerProcess } from './app-server.js';
import { createExecProcess } from './exec.js';
import { CODEX_MCP } from './mcp.js';
import { MODES, laneNeeds, modeOf, PERMISSION_MODES } from './modes.js';
import { nativeCodex } from './native.js';
import { runCodexSdk } from './sdk.js';

/**
 * `codex`: OpenAI Codex CLI (docs/protocols.md, "## Codex"), on one of two transports chosen by the
 * session's permission_mode (modes.ts): app-server.ts for the modes that may ask for approval,
 * exec.ts for those that never ask. Both map their items with items.ts; sdk.ts is the SDK lane.
 */

function createCodexProcess(input: ProviderRunInput): ProviderProcess {
  const mode = modeOf(input);
  return mode.transport === 'exec' ? createExecProcess(input, mode) : createAppServerProcess(input, mode);
}

const codex: ProviderDefinition = {
  name: 'codex',
  displayName: 'Codex CLI',
  defaultBinary: 'codex',
  install: 'npm install -g @openai/codex',
  // Auth (CODEX_API_KEY is what the SDK sets; OPENAI_API_KEY works too) and where codex keeps its
  // login, config and sessions.
  env: ['CODEX_API_KEY', 'OPENAI_API_KEY', 'CODEX_ACCESS_TOKEN', 'CODEX_HOME'],
  // The npm package's launcher, a Node script, is skipped: runs start its native binary (native.ts).
  directLaunch: nativeCodex,
  defaultQueue: 'prompt',
  // warm: on the app-server transport (the modes that may ask); exec-transport runs of a warm session start cold.
  // prewarm (ASM_PREWARM) likewise: a session whose runs take exec gets no prewarmed server.
  capabilities: ['approvals', 'interrupt', 'continuation', 'usage', 'warm', 'prewarm'],
  permissionModes: PERMISSION_MODES,
  nativePermissionModes: Object.keys(MODES),
  // developer instructions, the reasoning effort (thread/turn params on app-server, -c on exec); no
  // turn limit, and no "latest" thread on app-server.
  options: { system_prompt: true, reasoning_effort: ['none', 'minimal', 'low', 'medium', 'high', 'xhigh'] },
  sdk: {
    package: '@openai/codex-sdk',
    // No approvals (exec cannot ask, see sdk.ts); the thread resumes by id.
    capabilities: ['interrupt', 'continuation', 'usage', 'session_resume'],
    run: runCodexSdk,
  },
  mcp: CODEX_MCP,
  laneNeeds,
  versionArgs: ['--version'],
  homeSetup: APP_SERVER_HOME_SETUP,
  create: createCodexProcess,
};

export default codex;
