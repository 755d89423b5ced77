/** The Gemini CLI provider: its binary, environment, modes and capabilities, and the transport per run. */
import { join } from 'node:path';
import { jsonServers } from '../mcp.js';
import type { ProviderDefinition, ProviderProcess, ProviderRunInput } from '../types.js';
import { createAcpProcess } from './acp.js';
import { createHeadlessProcess } from './headless.js';

/**
 * `gemini`: Gemini CLI (docs/protocols.md, "## Gemini CLI"), on one of two transports:
 *
 * - headless.ts, `gemini --prompt=… --output-format stream-json`: one process per run, which cannot
 *   ask for approval. Every run of a cold session, and a warm session's run that no kept process can
 *   take (it continues a conversation: `--resume`).
 * - acp.ts, `gemini --acp` (Agent Client Protocol): a warm session's new conversation, whose process
 *   is then kept, and every later run that the kept process takes (the next session/prompt). It asks
 *   for approval where the permission mode says so.
 *
 * gemini-cli 0.61's ACP cannot pick up a recorded conversation in a new process (session/load
 * answers "No previous sessions found for this project"), so a conversation whose process is gone
 * goes on cold, headless, with `--resume`.
 *
 * MCP servers: a settings file with `mcpServers` (HTTP ones as `httpUrl`, streamable HTTP) that the
 * CLI reads as its system settings (GEMINI_CLI_SYSTEM_SETTINGS_PATH), merged over the user settings
 * of the session's HOME and out of the agent's reach (the run's MCP folder is read-only); both
 * transports read it.
 */

const GEMINI_MCP_FILE = 'gemini-settings.json';

function createGeminiProcess(input: ProviderRunInput): ProviderProcess {
  if (!input.warm || input.continueLatest) return createHeadlessProcess(input);
  const acp = createAcpProcess(input);
  if (input.providerSessionId === undefined) return acp;
  return keptOrResumed(createHeadlessProcess(input), acp);
}

/**
 * A warm session's run that continues its conversation: on the kept ACP process that holds it (the
 * backend calls warm.nextTurn), else a cold headless `--resume` run.
 */
function keptOrResumed(headless: ProviderProcess, acp: ProviderProcess): ProviderProcess {
  let current = headless;
  return {
    ...headless,
    onLine: (line) => current.onLine(line),
    decide: (approval, decision, reason) => current.decide(approval, decision, reason),
    interrupt: () => current.interrupt(),
    onExit: (exit, sawTerminal) => current.onExit(exit, sawTerminal),
    warm: {
      key: acp.warm!.key,
      nextTurn() {
        current = acp;
        return acp.warm!.nextTurn();
      },
    },
  };
}

const gemini: ProviderDefinition = {
  name: 'gemini',
  displayName: 'Gemini CLI',
  defaultBinary: 'gemini',
  install: 'npm install -g @google/gemini-cli',
  // Auth methods in the CLI's order of preference, and endpoint overrides.
  env: [
    'GEMINI_API_KEY',
    'GOOGLE_API_KEY',
    'GOOGLE_GENAI_USE_GCA',
    'GOOGLE_GENAI_USE_VERTEXAI',
    'GOOGLE_CLOUD_PROJECT',
    'GOOGLE_CLOUD_LOCATION',
    'GOOGLE_APPLICATION_CREDENTIALS',
    'GOOGLE_GEMINI_BASE_URL',
    'GOOGLE_VERTEX_BASE_URL',
  ],
  // Its launcher otherwise loads the CLI, starts it again as a child process (with a heap of half the
  // host's memory) and waits for it; without that, a cold run took 454–482 ms less in bench -- agents
  // (bench/RESULTS.md, twentieth pass). The child is told this same variable, so the run is the
  // child's, in one process, with Node's default heap.
  setEnv: { GEMINI_CLI_NO_RELAUNCH: 'true' },
  defaultQueue: 'prompt',
  // warm: over ACP (acp.ts), which also asks for approvals; cold headless runs cannot ask. prewarm
  // (ASM_PREWARM): a warm session's first process, over ACP; a cold session's takes its prompt in argv.
  capabilities: ['interrupt', 'continuation', 'usage', 'warm', 'prewarm'],
  permissionModes: { default: 'default', auto: 'auto_edit', bypass: 'yolo', plan: 'plan' },
  nativePermissionModes: ['default', 'auto_edit', 'yolo', 'plan'],
  // --resume latest. No flag for a system prompt, a turn limit or an effort (settings files only).
  options: { continuation_latest: true },
  mcp: {
    files: (servers) => [{ name: GEMINI_MCP_FILE, content: JSON.stringify({ mcpServers: jsonServers(servers, 'httpUrl') }) }],
    env: (_servers, dir) => ({ GEMINI_CLI_SYSTEM_SETTINGS_PATH: join(dir, GEMINI_MCP_FILE) }),
  },
  versionArgs: ['--version'],
  create: createGeminiProcess,
};

export default gemini;
