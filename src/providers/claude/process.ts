/** Claude Code on the core lane: its argv, and what the backend writes to and reads from the process. */
import { randomUUID } from 'node:crypto';
import { errorEvent, exitMessage, parseLine } from '../common.js';
import { mcpFilePath } from '../mcp.js';
import type { HomeSetup, ProviderProcess, ProviderRunInput } from '../types.js';
import { approvalResponse, initializeRequest, interruptRequest, userTurn } from './control.js';
import { createClaudeMapper } from './mapper.js';
import type { ClaudeLine } from './messages.js';

/**
 * Claude Code in bidirectional stream-json mode (docs/protocols.md, "## Claude Code"), the only
 * headless mode with approvals and clean interrupts:
 *
 *   claude -p --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio
 *          [--model M] [--permission-mode M] [--system-prompt S] [--max-turns N] [--effort E]
 *          [--mcp-config <the session's MCP servers file>]
 *          (--session-id <new uuid> | --resume <provider session id> | --continue)
 *
 * On start we write an `initialize` control_request and the user turn to stdin. stdin stays open as
 * the control channel (approvals, interrupt) until the turn's result, then it is closed so the CLI exits,
 * unless the session is warm: then the process is kept and the next run's turn is the next user message.
 * Its stdout lines go through the mapper (mapper.ts); besides:
 *
 *   a line that is not JSON                 → error parse_error (ends the run)
 *   the process exits without a result line → error transport_error, the stderr tail appended
 */

const BASE_ARGS = [
  '-p',
  '--input-format',
  'stream-json',
  '--output-format',
  'stream-json',
  '--verbose',
  '--permission-prompt-tool',
  'stdio',
];

/**
 * The first start in a new HOME, once per binary (ProviderDefinition.homeSetup): told initialize, the
 * CLI runs its config migrations and records them in ~/.claude.json (fifteen in 2.1.329), and exits
 * when its stdin ends; made once, they took 3–15 ms off a cold run in bench -- agents
 * (bench/RESULTS.md, twentieth pass). Only the migrations' marks are kept of that file: it also holds
 * the install's userID and machineID, which every session makes its own. Non-essential traffic is
 * off, so the setup sends nothing anywhere.
 */
export const CLAUDE_HOME_SETUP: HomeSetup = {
  args: BASE_ARGS,
  env: { CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1', DISABLE_AUTOUPDATER: '1' },
  input: [initializeRequest()],
  keepKeys: { '.claude.json': ['migrationVersion', 'opusProMigrationComplete', 'hasResetAutoModeOptInForDefaultOffer'] },
};

/** The file of the session's MCP servers (ProviderRunInput.mcp), in claude's `--mcp-config` shape. */
export const CLAUDE_MCP_FILE = 'claude-mcp.json';

/** `--permission-mode`: 'default' is the CLI's normal mode, but its flag does not accept that name. */
export function explicitPermissionMode(input: ProviderRunInput): string | undefined {
  return input.permissionMode && input.permissionMode !== 'default' ? input.permissionMode : undefined;
}

/** The session options as flags (the SDK lane passes the same as query options). */
function optionArgs(input: ProviderRunInput): string[] {
  return [
    ...(input.systemPrompt !== undefined ? ['--system-prompt', input.systemPrompt] : []),
    ...(input.maxTurns !== undefined ? ['--max-turns', String(input.maxTurns)] : []),
    ...(input.reasoningEffort !== undefined ? ['--effort', input.reasoningEffort] : []),
  ];
}

/**
 * Which conversation: the one given (--resume), the cwd's most recent (--continue: its id comes with
 * init), or a fresh one whose id we choose (--session-id; a prewarmed process's, when the run takes
 * one), so it is known before the CLI prints init.
 */
function conversationArgs(input: ProviderRunInput, sessionId: string | undefined): string[] {
  if (input.providerSessionId) return ['--resume', input.providerSessionId];
  return input.continueLatest ? ['--continue'] : ['--session-id', sessionId!];
}

export function createClaudeProcess(input: ProviderRunInput): ProviderProcess {
  const sessionId = input.providerSessionId ?? (input.continueLatest ? undefined : input.newConversationId ?? randomUUID());
  const map = createClaudeMapper(input);
  const permissionMode = explicitPermissionMode(input);
  const mcpConfig = mcpFilePath(input, CLAUDE_MCP_FILE);
  let interruptCount = 0;
  const nextTurn = () => ({ write: [JSON.stringify(userTurn(input.prompt))] });
  const processArgs = [
    ...BASE_ARGS,
    ...(input.model ? ['--model', input.model] : []),
    ...(permissionMode ? ['--permission-mode', permissionMode] : []),
    ...optionArgs(input),
    ...(mcpConfig ? ['--mcp-config', mcpConfig] : []),
  ];

  return {
    args: [...processArgs, ...conversationArgs(input, sessionId)],
    stdin: 'control',
    providerSessionId: sessionId,
    start() {
      return { write: [initializeRequest(), JSON.stringify(userTurn(input.prompt))] };
    },
    onLine(text) {
      const parsed = parseLine<ClaudeLine>('claude', text);
      return 'line' in parsed ? map(parsed.line) : parsed;
    },
    decide(approval, decision, reason) {
      return { write: [approvalResponse(approval, decision, reason)] };
    },
    interrupt() {
      interruptCount += 1;
      return { write: [interruptRequest(interruptCount)] };
    },
    onExit(exit, sawTerminal) {
      return sawTerminal ? [] : [errorEvent('transport_error', exitMessage('claude', exit))];
    },
    // A warm session's next turn is the next user message on the same stdin; the process keeps the
    // conversation. A prewarmed process is initialized and waits for its first.
    warm: {
      key: processArgs,
      nextTurn,
      prewarm: { start: () => ({ write: [initializeRequest()] }), firstTurn: nextTurn },
    },
  };
}
