import type { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import type { McpServers } from '../schemas/mcp-servers.js';
import type { ProviderEvent } from '../schemas/events.js';
import type { PermissionModeTable } from './permission-modes.js';

/**
 * A provider is one file in this folder, or one folder with an index module, that default-exports a
 * ProviderDefinition: the CLI's argv, its line parser and its control protocol. The registry
 * discovers them, so adding a provider touches nothing else. Fixtures live in test/fixtures/<provider>/.
 */

export type ApprovalDecision = 'allow' | 'allow_for_session' | 'deny';

export interface ProviderRunInput {
  runId: string;
  sessionId: string;
  prompt: string;
  /** Absolute, already validated against the workspace root. */
  cwd: string;
  model?: string;
  /** The provider's native permission mode (permission-modes.ts resolved it); absent: the CLI's own default. */
  permissionMode?: string;
  /** The provider's own session id from an earlier run, to continue that conversation. */
  providerSessionId?: string;
  /** Continue the CLI's most recent conversation (ProviderOptionSupport.continuation_latest); never with providerSessionId. */
  continueLatest?: boolean;
  /**
   * A new conversation's id, where a process prewarmed for the session (WarmTurn.prewarm) holds one
   * already: the run takes that process and its conversation. Never with providerSessionId.
   */
  newConversationId?: string;
  /** Only the options the provider declares in ProviderDefinition.options reach it (agent-options.ts checks). */
  systemPrompt?: string;
  maxTurns?: number;
  reasoningEffort?: string;
  /**
   * The complete environment the CLI will get (already filtered by the allowlist), so a provider can
   * refuse to start a CLI that would hang without its credentials (amp without AMP_API_KEY).
   */
  env: Record<string, string>;
  /**
   * The cumulative totals the provider reported at the end of the previous run of the conversation it
   * continues (ProviderLineOutput.totals), absent for a new conversation. CLIs that report usage or cost
   * for the whole thread (codex, claude's total_cost_usd) subtract these to report per-run figures.
   */
  previousTotals?: ProviderTotals;
  /**
   * The session's MCP servers (secrets included) and the folder, as the CLI sees it, that holds the
   * files ProviderMcp.files made of them; absent when the session has none.
   */
  mcp?: { servers: McpServers; dir: string };
  /**
   * A warm session's run (core lane, local CLI): its agent process is kept for the session's next run,
   * for at most idleMs idle. A provider whose warm transport differs from its cold one picks it by this (gemini).
   */
  warm?: { idleMs: number };
}

/**
 * How a provider hands a session's MCP servers to its CLI (README "MCP servers"). Secret values (a
 * stdio server's `env`, an HTTP server's `headers`) go into files or the CLI's environment, never
 * into its argv, which any process on the host may read (/proc/<pid>/cmdline). A provider without
 * one refuses sessions with MCP servers.
 */
export interface ProviderMcp {
  /** Refuses servers this CLI cannot take: throws an AsmError naming the field (badField). */
  check?(servers: McpServers): void;
  /** The files the CLI reads them from, written into the run's MCP folder, which the CLI sees read-only. */
  files(servers: McpServers): McpFile[];
  /** Variables the CLI needs besides (given the folder the files are in), added to its environment. */
  env?(servers: McpServers, dir: string): Record<string, string>;
}

export interface McpFile {
  /** A plain file name, in the run's MCP folder. */
  name: string;
  content: string;
}

/**
 * A provider's cumulative counters for its conversation (tokens, cost), in whatever shape it chooses:
 * the service stores them on the session and hands them back as `previousTotals` on continuation.
 */
export type ProviderTotals = Record<string, number>;

/** What the provider wants done with the process in response to something (a line, an approval, an interrupt). */
export interface ProviderActions {
  events?: ProviderEvent[];
  /** Lines to write to the CLI's stdin (newline added by the runner). */
  write?: string[];
  /** Close the CLI's stdin, e.g. once the turn's result arrived so the CLI exits. */
  endInput?: boolean;
  /** Signal the CLI's process group. */
  signal?: NodeJS.Signals;
}

/**
 * An approval the CLI is waiting on. `native` is whatever the provider needs to answer it later
 * (e.g. the control_request id); the backend assigns `approval_id` and keeps the mapping.
 */
export interface ApprovalRequest {
  subject: string;
  toolInput: unknown;
  native: unknown;
}

export interface ProviderLineOutput extends ProviderActions {
  approvals?: ApprovalRequest[];
  /** The provider's own session id, once known (e.g. from claude's system/init). */
  providerSessionId?: string;
  /** The conversation's cumulative totals as of this line; the backend stamps the latest on the terminal event. */
  totals?: ProviderTotals;
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Tail of stderr, for error messages. */
  stderr: string;
}

/** Per-run protocol state: created for each run, fed the process's output. */
export interface ProviderProcess {
  /** Arguments after the binary. Never a shell string (except the shell provider's own `-c`). */
  args: string[];
  /** 'control': stdin stays open as the control channel; 'closed': stdin is closed at spawn. */
  stdin: 'control' | 'closed';
  /**
   * The provider's session id when it is known before the CLI starts (claude: `--session-id`/`--resume`),
   * so run_started can report it. Providers that learn it from the output leave it unset.
   */
  providerSessionId?: string;
  /** Lines written to stdin right after spawn (claude: initialize and the user turn). */
  start(): ProviderActions;
  /** One framed stdout line (without the newline). */
  onLine(line: string): ProviderLineOutput;
  /** Answer a pending approval. */
  decide(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null): ProviderActions;
  /** Ask the CLI to stop the current turn (a stdin control message or a signal). */
  interrupt(): ProviderActions;
  /**
   * The process exited. Return the terminal event if the run has none yet (the runner tells).
   * A CLI that exits without a terminal line ends failed or interrupted, by its exit status.
   */
  onExit(exit: ProcessExit, sawTerminal: boolean): ProviderEvent[];
  /**
   * Host executables the CLI must not find in ASM's sandbox (names; masked wherever its PATH has
   * them), and the notice its start then prints on stderr: ASM's doing, not the agent's, so it makes
   * no stderr event. Absent: the CLI sees the host's executables as they are.
   */
  hides?: { executables: string[]; notice: RegExp };
  /**
   * For a provider with the `warm` capability: how this run may use a process a warm session kept
   * from its previous run (backends/warm-processes.ts), instead of starting one.
   */
  warm?: WarmTurn;
}

/** A turn on a kept process: the turn's end is the output with `endInput`, which then leaves the process running. */
export interface WarmTurn {
  /** What the process was started with besides its conversation: a kept process is used only by a run whose key is the same. */
  key: string[];
  /** What starts this run's turn on a kept process (in place of start(): the process is initialized already). */
  nextTurn(): ProviderActions;
  /**
   * A provider that can start a session's process ahead of its first run (ASM_PREWARM, the `prewarm`
   * capability): what the process is told when it starts (`start`: initialize), and what starts the
   * first run's turn on it, in place of start() (`firstTurn`). Absent: never prewarmed.
   */
  prewarm?: { start(): ProviderActions; firstTurn(): ProviderActions };
}

/**
 * A provider's SDK lane (docs/protocols.md, "## SDK lane"): its vendor's SDK, an optional dependency
 * loaded on demand (only through SdkLoader). The SDK backend (src/backends/sdk.ts) keeps the run's
 * life cycle; `run` drives one turn with the loaded module and reports what happens in the same
 * ProviderLineOutput a CLI line gives, mapped by the same code as the core lane, so both lanes emit
 * the same events.
 */
export interface ProviderSdk {
  /** The npm package (an optionalDependency of the service). */
  package: string;
  /** What a run on the SDK lane can do (reported in place of the core capabilities). */
  capabilities: string[];
  /**
   * Start one turn. May throw an AsmError to refuse the run before anything is started. `report`
   * gets the turn's output in order; an output with `endInput` asks for the turn to be wound down
   * (the backend calls SdkTurn.endInput).
   */
  run(module: unknown, input: SdkRunInput, report: (output: ProviderLineOutput) => void): SdkTurn;
}

export interface SdkRunInput extends ProviderRunInput {
  /**
   * The CLI the SDK drives: the same binary the core lane runs (ASM_<NAME>_BIN), never the one the
   * SDK bundles, so both lanes run one CLI version (and the bundled binaries need not be installed).
   */
  binary: string;
  /** How the service starts processes, for an SDK that lets its caller start the CLI (claude's spawnClaudeCodeProcess). */
  spawn: StartProcess;
}

/**
 * A process as the service starts it (src/backends/spawn-child.ts: posix_spawn, or Node's fork): the
 * part of a ChildProcess the service and the SDKs use; a ChildProcess is one. Its events come in
 * ChildProcess's order: 'spawn' or 'error', then 'exit', then 'close' once stdout and stderr closed.
 */
export interface StartedProcess extends EventEmitter {
  /** Undefined when the process did not start ('error' follows). */
  readonly pid?: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  /** A signal was sent by kill(). */
  readonly killed: boolean;
  kill(signal?: NodeJS.Signals): boolean;
}

export interface StartOptions {
  cwd: string;
  env: Record<string, string>;
  /** The child leads a new session and process group (child_process's `detached`). */
  detached?: boolean;
  /** stdin, stdout, stderr: a pipe, or /dev/null. */
  stdio: ['pipe' | 'ignore', 'pipe' | 'ignore', 'pipe' | 'ignore'];
}

export type StartProcess = (command: string, args: string[], options: StartOptions) => StartedProcess;

/** One turn in flight on the SDK lane. */
export interface SdkTurn {
  /** The provider's session id when known before the turn starts (claude: `sessionId`/`resume`). */
  providerSessionId?: string;
  /**
   * Settles when the SDK's stream has ended; never rejects. A failure (the SDK throwing) is reported
   * through `report` as an error event before it resolves.
   */
  done: Promise<void>;
  decide(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null): void;
  /** Ask the agent to stop the turn, its own way (claude: the interrupt control request). */
  interrupt(): void;
  /** The turn's terminal output arrived: let the agent finish and exit. */
  endInput(): void;
  /** Stop now (the SDK's abort: it kills the CLI). */
  stop(): void;
}

/**
 * A CLI's first start in a new HOME, done once per binary instead of once per session
 * (src/backends/home-seeds.ts): the CLI is started in a throwaway HOME with `args` and `env`, gets
 * `input` on its stdin, which is then closed, and must exit; what it made there that `keep` and
 * `keepKeys` name is copied into each new session's HOME, after the operator's template. Only what is
 * the same for every session may be kept (a database's schema, a migration's mark), never an id or a
 * conversation.
 */
export interface HomeSetup {
  args: string[];
  /** Fixed variables of the setup's environment besides PATH: never a tenant's, never a secret. */
  env?: Record<string, string>;
  input: string[];
  /** The HOME-relative paths of the files kept whole. */
  keep?: RegExp;
  /** JSON files (HOME-relative path → top-level keys) of which only those keys are kept: a file that also holds ids. */
  keepKeys?: Record<string, string[]>;
}

/** Which of the seeds' session options a provider's CLI takes; anything else is refused naming the field. */
export interface ProviderOptionSupport {
  system_prompt?: boolean;
  max_turns?: boolean;
  /** The reasoning effort levels its CLI accepts. */
  reasoning_effort?: readonly string[];
  /** Continuation of the CLI's most recent conversation (`continuation: {strategy: "latest"}`). */
  continuation_latest?: boolean;
}

/** A program a run starts in place of its provider's configured binary, which would only have started it (ProviderDefinition.directLaunch). */
export interface DirectLaunch {
  binary: string;
  /** The variables the skipped launcher would have set: fixed, never a secret. */
  env: Readonly<Record<string, string>>;
}

export interface ProviderDefinition {
  name: string;
  displayName: string;
  /** Binary looked up on PATH unless ASM_<NAME>_BIN is set. */
  defaultBinary: string;
  /** How an operator installs the CLI, for the cli_not_found answer (registry.ts cliNotFound). */
  install: string;
  /** Environment names the CLI needs (auth, endpoints); passed through from the service's environment. */
  env: string[];
  /** Variables the service sets for the CLI whatever its own environment holds (providers/env.ts): fixed, never a secret. */
  setEnv?: Readonly<Record<string, string>>;
  /**
   * Where the configured binary (its real path, links followed) is a launcher that only finds and
   * starts another program, that program and the launcher's variables; a local run starts it
   * directly (registry.ts resolveLaunch). Absent, or undefined for a binary: the binary is started.
   */
  directLaunch?(binary: string): Promise<DirectLaunch | undefined>;
  /** Queue lane for this provider's runs unless the session or run names one. */
  defaultQueue: string;
  capabilities: string[];
  /**
   * The one permission-mode table: each normalized mode (permission-modes.ts) this provider has → its
   * native mode. `default` is required; a mode it lacks is refused with config_invalid.
   */
  permissionModes: PermissionModeTable & { default: string };
  /** Native modes accepted as provider_permission_mode (the escape hatch): the table's values and any others. */
  nativePermissionModes: readonly string[];
  /** The session options beyond the common ones that this provider passes to its CLI (agent-options.ts). */
  options: ProviderOptionSupport;
  /** The SDK lane, for the providers whose vendor ships an SDK (claude, codex). */
  sdk?: ProviderSdk;
  /** How its CLI gets a session's MCP servers; absent: it cannot (sessions with some are refused). */
  mcp?: ProviderMcp;
  /**
   * The capabilities a session needs from the lane it runs on, by its native permission mode (codex:
   * `approvals` for the modes that ask). Lane resolution (src/sessions/backend-resolution.ts) keeps
   * `lane: auto` off an SDK lane that lacks one and refuses `lane: sdk`. Absent: needs nothing special.
   */
  laneNeeds?(nativePermissionMode: string | null): string[];
  /** Arguments that print the CLI's version, for discovery. */
  versionArgs: string[];
  /** What the CLI makes in a fresh HOME on its first start that every session's HOME may start with; absent: nothing worth keeping. */
  homeSetup?: HomeSetup;
  /**
   * Protocol state for one run. May throw an AsmError to refuse the run before anything is spawned
   * (the run ends with that error), e.g. when the CLI could only hang.
   */
  create(input: ProviderRunInput): ProviderProcess;
}
