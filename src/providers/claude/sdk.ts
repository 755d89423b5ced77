/** Claude Code on the SDK lane: a turn run through the Agent SDK's query(). */
import { randomUUID } from 'node:crypto';
import { errorEvent } from '../common.js';
import { mcpFilePath } from '../mcp.js';
import type { ProviderLineOutput, SdkRunInput, SdkTurn, StartedProcess } from '../types.js';
import { permissionAnswer, userTurn } from './control.js';
import { createClaudeMapper } from './mapper.js';
import type { ClaudeLine, PermissionUpdate } from './messages.js';
import { CLAUDE_MCP_FILE, explicitPermissionMode } from './process.js';

/**
 * The Agent SDK's query() (docs/protocols.md, "## SDK lane") runs the same CLI in the same
 * bidirectional mode; what differs is who holds the control channel:
 *
 *   query({prompt: <one user message, then held open>, options})
 *     pathToClaudeCodeExecutable  the configured CLI (SdkRunInput.binary)
 *     env                         the allowlisted environment (the SDK replaces, never merges, it)
 *     cwd, model, permissionMode  as on the core lane ('default' left to the CLI)
 *     systemPrompt, maxTurns, effort   the session options, as the core lane's flags
 *     sessionId | resume | continue    a fresh id up front, the conversation to continue, or the latest
 *     canUseTool                  approvals: each call is reported as an approval; decide() settles it
 *                                 with the same PermissionResult the core lane writes
 *     abortController             stop(): the SDK kills the CLI
 *     spawnClaudeCodeProcess      the CLI started by SdkRunInput.spawn, as the core lane's (posix_spawn),
 *                                 killed when the SDK's signal aborts; its stderr lines are `stderr` events
 *   interrupt()                   query.interrupt(), the interrupt control request
 *
 * The prompt stream stays open until the turn's result (mapped with endInput), because the SDK
 * closes the CLI's stdin, the control channel, when it ends. Messages go through the core lane's
 * mapper; an exception from the SDK (the CLI died, an abort) ends the run as transport_error, as the
 * core lane's exit without a result does.
 */

/** The part of the SDK's module we use (typed here: the package is optional, its types may be absent). */
interface ClaudeSdkModule {
  query(params: { prompt: AsyncIterable<unknown>; options: Record<string, unknown> }): AsyncIterable<ClaudeLine> & {
    interrupt(): Promise<unknown>;
  };
}

/** What the SDK gives spawnClaudeCodeProcess (its SpawnOptions). */
interface SdkSpawnOptions {
  command: string;
  args: string[];
  cwd?: string;
  env: Record<string, string | undefined>;
  signal?: AbortSignal;
}

/**
 * The CLI the SDK asked for, started by the service's spawner: as Node's spawn with the same options
 * would (stdio piped, SIGTERM when the signal aborts), with stderr to `onStderr` (the SDK sees no
 * stderr of a process it did not start).
 */
function startCli(input: SdkRunInput, options: SdkSpawnOptions, onStderr: (chunk: string) => void): StartedProcess {
  const env = Object.fromEntries(Object.entries(options.env).filter((entry): entry is [string, string] => entry[1] !== undefined));
  const child = input.spawn(options.command, options.args, { cwd: options.cwd ?? input.cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stderr?.setEncoding('utf8').on('data', onStderr);
  const stop = () => child.kill('SIGTERM');
  if (options.signal?.aborted) stop();
  options.signal?.addEventListener('abort', stop, { once: true });
  child.once('close', () => options.signal?.removeEventListener('abort', stop));
  return child;
}

/** ApprovalRequest.native on the SDK lane: the pending canUseTool call. */
interface PendingToolPermission {
  settle: (result: Record<string, unknown>) => void;
  input: unknown;
  suggestions: PermissionUpdate[];
}

export function runClaudeSdk(module: unknown, input: SdkRunInput, report: (output: ProviderLineOutput) => void): SdkTurn {
  const sessionId = input.providerSessionId ?? (input.continueLatest ? undefined : randomUUID());
  const map = createClaudeMapper(input);
  const permissionMode = explicitPermissionMode(input);
  const mcpConfig = mcpFilePath(input, CLAUDE_MCP_FILE);
  const abort = new AbortController();
  let endPrompt!: () => void;
  const promptEnded = new Promise<void>((resolve) => (endPrompt = resolve));
  async function* prompt(): AsyncGenerator<unknown> {
    yield userTurn(input.prompt);
    await promptEnded;
  }

  const reportStderr = (chunk: string) => {
    const lines = chunk.split('\n').filter((line) => line.trim() !== '');
    report({ events: lines.map((content) => ({ kind: 'stderr', payload: { content } })) });
  };
  const query = (module as ClaudeSdkModule).query({
    prompt: prompt(),
    options: {
      pathToClaudeCodeExecutable: input.binary,
      env: input.env,
      cwd: input.cwd,
      ...(input.model && { model: input.model }),
      ...(permissionMode && { permissionMode }),
      ...(permissionMode === 'bypassPermissions' && { allowDangerouslySkipPermissions: true }),
      ...(input.systemPrompt !== undefined && { systemPrompt: input.systemPrompt }),
      ...(input.maxTurns !== undefined && { maxTurns: input.maxTurns }),
      ...(input.reasoningEffort !== undefined && { effort: input.reasoningEffort }),
      ...(input.providerSessionId ? { resume: sessionId } : input.continueLatest ? { continue: true } : { sessionId }),
      // The file, as on the core lane: the SDK's own `mcpServers` option would put them in argv.
      ...(mcpConfig && { extraArgs: { 'mcp-config': mcpConfig } }),
      abortController: abort,
      canUseTool: (toolName: string, toolInput: unknown, options: { suggestions?: PermissionUpdate[] }) =>
        new Promise((settle) => {
          const native: PendingToolPermission = { settle, input: toolInput, suggestions: options.suggestions ?? [] };
          report({ approvals: [{ subject: toolName, toolInput, native }] });
        }),
      // Started as the core lane starts its CLI (SdkRunInput.spawn), its stderr reported as there.
      spawnClaudeCodeProcess: (options: SdkSpawnOptions) => startCli(input, options, reportStderr),
    },
  });

  const done = (async () => {
    try {
      for await (const message of query) report(map(message));
    } catch (err) {
      report({ events: [errorEvent('transport_error', `claude (Agent SDK): ${err instanceof Error ? err.message : String(err)}`)] });
    }
  })();

  return {
    providerSessionId: sessionId,
    done,
    decide(approval, decision, reason) {
      const pending = approval.native as PendingToolPermission;
      pending.settle(permissionAnswer(pending.input, pending.suggestions, decision, reason));
    },
    interrupt() {
      // A failed interrupt request leaves the backend's grace period to stop the CLI.
      query.interrupt().catch(() => undefined);
    },
    endInput: endPrompt,
    stop: () => abort.abort(),
  };
}
