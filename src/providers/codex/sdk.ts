/** Codex on the SDK lane: a turn run through @openai/codex-sdk, which runs exec underneath. */
import { errorEvent } from '../common.js';
import type { ProviderLineOutput, SdkRunInput, SdkTurn } from '../types.js';
import { createExecMapper, type ExecLine } from './exec.js';
import { codexMcpOverrides } from './mcp.js';
import { modeOf } from './modes.js';

/**
 * The Codex TypeScript SDK (docs/protocols.md, "## SDK lane") spawns `codex exec --experimental-json`
 * per turn, so its events are exec's and go through the exec mapper:
 *
 *   new Codex({codexPathOverride: <the configured CLI>, env: <the allowlisted environment>,
 *              config: {developer_instructions: <system_prompt>}})
 *     .startThread(options) | .resumeThread(<provider session id>, options)
 *     .runStreamed(prompt, {signal})
 *   options: {model, workingDirectory: cwd, skipGitRepoCheck, sandboxMode: <the mode's sandbox>,
 *             approvalPolicy: "never", modelReasoningEffort}
 *
 * exec cannot ask for approval (see modes.ts), so the SDK lane has no approvals: every permission
 * mode runs with its own sandbox and approval policy "never", which means a command the modes
 * default and auto (natively read-only, full-auto, untrusted) would have asked about is refused
 * instead (the model is told).
 * Sessions that need a person to approve use `lane: core` (codex app-server).
 *
 * Interrupt and stop are the SDK's abort (it SIGTERMs the CLI): exec has no gentler channel, and it
 * prints no final event when stopped, so the backend ends the run user_cancelled (or timeout).
 */

/** The part of the SDK's module we use (typed here: the package is optional, its types may be absent). */
interface CodexSdkModule {
  Codex: new (options: Record<string, unknown>) => {
    startThread(options: Record<string, unknown>): CodexSdkThread;
    resumeThread(id: string, options: Record<string, unknown>): CodexSdkThread;
  };
}

interface CodexSdkThread {
  runStreamed(input: string, options: { signal: AbortSignal }): Promise<{ events: AsyncIterable<ExecLine> }>;
}

export function runCodexSdk(module: unknown, input: SdkRunInput, report: (output: ProviderLineOutput) => void): SdkTurn {
  const { sandbox } = modeOf(input);
  const map = createExecMapper(input);
  const abort = new AbortController();
  const codex = new (module as CodexSdkModule).Codex({
    codexPathOverride: input.binary,
    env: input.env,
    ...(input.systemPrompt !== undefined && { config: { developer_instructions: input.systemPrompt } }),
    // The session's MCP servers, as `--config` overrides without their secrets (mcp.ts).
    ...(input.mcp && { configOverrides: codexMcpOverrides(input) }),
  });
  const options = {
    ...(input.model && { model: input.model }),
    workingDirectory: input.cwd,
    skipGitRepoCheck: true,
    sandboxMode: sandbox,
    approvalPolicy: 'never',
    ...(input.reasoningEffort !== undefined && { modelReasoningEffort: input.reasoningEffort }),
  };
  const thread = input.providerSessionId ? codex.resumeThread(input.providerSessionId, options) : codex.startThread(options);

  const done = (async () => {
    try {
      const { events } = await thread.runStreamed(input.prompt, { signal: abort.signal });
      for await (const event of events) report(map(event));
    } catch (err) {
      // After turn.failed the SDK throws too (exec exits 1); the backend has its terminal event by then.
      report({ events: [errorEvent('transport_error', `codex (SDK): ${err instanceof Error ? err.message : String(err)}`)] });
    }
  })();

  return {
    providerSessionId: input.providerSessionId,
    done,
    // Never called: nothing on this lane asks.
    decide: () => undefined,
    interrupt: () => abort.abort(),
    // The SDK closed exec's stdin when it wrote the prompt; the turn ends with the process.
    endInput: () => undefined,
    stop: () => abort.abort(),
  };
}
