/** Codex's exec transport: `codex exec --json`, one process per turn that cannot ask for approval. */
import { errorEvent, exitMessage, parseLine, raw } from '../common.js';
import type { ProviderLineOutput, ProviderProcess, ProviderRunInput } from '../types.js';
import { ItemMapper, tokenTotals, turnFailed, type CodexItem } from './items.js';
import { codexMcpArgs } from './mcp.js';
import type { Mode } from './modes.js';

/*
 * `codex exec --json --skip-git-repo-check [-m MODEL] <mode flags> [-c developer_instructions=…]
 *  [-c model_reasoning_effort=…] [resume <thread id>] -- PROMPT`
 * (docs/protocols.md, "## Codex"). stdin is closed (/dev/null): exec reads a piped stdin to EOF before
 * it starts. The prompt follows `--`, so one that starts with "-" is not a flag. Interrupt: SIGINT,
 * after which exec prints no final event, so an exit after an interrupt is user_cancelled.
 */

/** One JSONL event of exec's stdout. */
export interface ExecLine {
  type?: string;
  thread_id?: string;
  item?: CodexItem;
  usage?: Record<string, number>;
  error?: { message?: string };
}

/**
 * exec's JSONL event → ASM mapping of one run, shared by both lanes that run exec: the core lane
 * feeds it stdout lines, the SDK lane the events runStreamed() yields (the same objects, parsed).
 */
export function createExecMapper(input: ProviderRunInput): (line: ExecLine) => ProviderLineOutput {
  const items = new ItemMapper(input.previousTotals);
  return (line) => {
    switch (line.type) {
      case 'thread.started':
        return { providerSessionId: line.thread_id };
      case 'turn.started':
        return {};
      case 'item.started':
        return { events: items.itemStarted(line.item ?? {}) };
      case 'item.completed':
        return { events: items.itemCompleted(line.item ?? {}) };
      case 'turn.completed':
        items.totals = tokenTotals(line.usage ?? {});
        return items.completed(null);
      case 'turn.failed':
        return { events: [turnFailed(line.error?.message ?? 'codex turn failed')] };
      default:
        // item.updated, and top-level `error` lines, which are often retries ("Reconnecting... 2/5").
        return { events: [raw(line)] };
    }
  };
}

/** The session options as `-c key=value` overrides; values are TOML, and a JSON string is one (DEL escaped too). */
function execConfigArgs(input: ProviderRunInput): string[] {
  const toml = (text: string) => JSON.stringify(text).replaceAll('\x7f', '\\u007f');
  return [
    ...(input.systemPrompt !== undefined ? ['-c', `developer_instructions=${toml(input.systemPrompt)}`] : []),
    ...(input.reasoningEffort !== undefined ? ['-c', `model_reasoning_effort=${toml(input.reasoningEffort)}`] : []),
  ];
}

export function createExecProcess(input: ProviderRunInput, mode: Mode): ProviderProcess {
  const map = createExecMapper(input);
  let interrupted = false;

  return {
    args: [
      'exec',
      '--json',
      '--skip-git-repo-check',
      ...(input.model ? ['-m', input.model] : []),
      ...mode.execArgs!,
      ...execConfigArgs(input),
      ...codexMcpArgs(input),
      ...(input.providerSessionId ? ['resume', input.providerSessionId] : []),
      '--',
      input.prompt,
    ],
    stdin: 'closed',
    start: () => ({}),
    onLine(text) {
      const parsed = parseLine<ExecLine>('codex', text);
      return 'line' in parsed ? map(parsed.line) : parsed;
    },
    // exec never asks, so there is never anything to answer.
    decide: () => ({}),
    interrupt() {
      interrupted = true;
      return { signal: 'SIGINT' };
    },
    onExit(exit, sawTerminal) {
      if (sawTerminal) return [];
      // exec prints no final event when it is stopped: SIGINT gives exit 1, SIGTERM 143.
      if (interrupted || exit.signal === 'SIGINT' || exit.code === 130) {
        return [errorEvent('user_cancelled', exitMessage('codex exec', exit, 'after an interrupt'))];
      }
      // 2 is an argument error (clap): this build does not take the flags we pass.
      if (exit.code === 2) return [errorEvent('config_invalid', exitMessage('codex exec', exit))];
      return [errorEvent('transport_error', exitMessage('codex exec', exit))];
    },
  };
}
