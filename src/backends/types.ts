import type { SandboxSettings } from '../config.js';
import type { ProviderEvent } from '../schemas/events.js';
import type { ApprovalDecision, McpFile, ProcessExit, ProviderDefinition, ProviderRunInput } from '../providers/types.js';
import type { ExecutionSurface } from '../schemas/api.js';
import type { McpServers } from '../schemas/mcp-servers.js';

/**
 * A backend executes one run and reports normalized events. The core backend runs the provider's CLI
 * as a subprocess, on an API process or, for a remote_node run, on the worker that owns the run.
 */

export type InterruptReason = 'user' | 'deadline' | 'idle' | 'timeout' | 'shutdown';

export interface BackendRunSpec extends ProviderRunInput {
  provider: ProviderDefinition;
  /** Resolved binary path or name. */
  binary: string;
  /** Where the CLI process is placed (surfaces.ts); the SDK lane runs in-process and has none but local. */
  surface: ExecutionSurface;
  /** Name of the node executing the run, reported in run_started. */
  node: string;
  /** Deadline for the whole run; the backend interrupts with reason 'deadline' when it passes. */
  deadlineMs: number;
  /**
   * How long the agent may print nothing (no stdout or stderr line, no SDK message) while no approval
   * waits; the backend then interrupts with reason 'idle'. 0: never.
   */
  idleTimeoutMs: number;
  /** When approvals expire; stamped on approval_requested as expires_at. */
  approvalTimeoutMs: number;
  /** The clock expires_at is stamped on: the deployment's (Cluster.now), which the sweeps that expire it read too. */
  now: () => number;
  /** The session's MCP servers, secrets included (mcp-setup.ts hands them to the CLI). */
  mcpServers?: McpServers;
  /**
   * Takes the workspace's snapshot before the run (src/sessions/run-diffs.ts), once however often it
   * is called, and resolves when it is taken; never rejects. The agent gets its prompt only after: a
   * CLI that reads its prompt from stdin is spawned first, so the snapshot's git processes run while
   * it loads instead of holding up its spawn, and it gets its first input once the snapshot is
   * taken; one that takes it in its arguments (or an SDK) is started then. Absent: nothing to wait for.
   */
  workspaceSnapshot?: () => Promise<void>;
}

/**
 * Receives events in order. The first is always run_started (or a terminal error when the CLI could not
 * start); exactly one terminal event (result, error, run_completed) comes last. `approval_requested`
 * events carry the approval_id the backend assigned. A sink that records asynchronously returns the
 * promise of that recording: the backend stops reading the agent's output while too many are pending
 * (backpressure), so a chatty agent waits for the store instead of filling the service's memory.
 */
export type EventSink = (event: ProviderEvent) => void | Promise<unknown>;

export interface BackendRun {
  /** Resolves once the terminal event was emitted and the process is gone. Never rejects. */
  readonly done: Promise<void>;
  /** Forward a decision to the CLI. Rejects with AsmError not_found if the approval is not pending here. */
  decide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<void>;
  /**
   * Stop the run; its terminal event is error user_cancelled (user/shutdown), timeout (deadline/timeout)
   * or idle_timeout (idle).
   */
  interrupt(reason: InterruptReason): Promise<void>;
}

export interface Backend {
  readonly name: string;
  start(spec: BackendRunSpec, sink: EventSink): BackendRun;
  /** A run of the session in its sandbox is about to start: its folders are made meanwhile (Sandbox.prepare). */
  prepare(sessionId: string, cli?: SessionCli): void;
  /** The session is closed: an agent process kept for it (a warm session) is stopped. */
  releaseSession?(sessionId: string): void;
  /** ASM_PREWARM: start the session's agent process ahead of its first run (`specOf`: that run's spec without a prompt); false when none was started. */
  prewarm?(sessionId: string, provider: string, idleMs: number, specOf: () => Promise<BackendRunSpec | null>): Promise<boolean>;
}

/**
 * The CLI a session's runs start: its provider, and its binary (a path, or a name on PATH): as
 * configured, or the program its launcher would start (providers/registry.ts resolveLaunch), with
 * the variables that launcher would have set.
 */
export interface SessionCli {
  provider: ProviderDefinition;
  binary: string;
  env?: Readonly<Record<string, string>>;
}

/** What the runner needs to start a CLI, before a surface and the sandbox place it. */
export interface CliCommand {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  stdin: 'control' | 'closed';
  /** Host executables the CLI must not find, masked by the sandbox (ProviderProcess.hides); a surface without a sandbox ignores them. */
  hiddenExecutables?: string[];
}

/** The sandbox local CLIs run in (sandbox.ts says what it isolates). */
export interface Sandbox {
  readonly kind: SandboxSettings['kind'];
  /** Runs a trivial command in the sandbox; rejects with an Error that says why the sandbox cannot work here. */
  check(): Promise<void>;
  /**
   * What to spawn to run `cli` in the session's sandbox. Rejects with an AsmError when the CLI cannot
   * start: config_invalid for an unusable working directory, cli_not_found for a missing binary.
   */
  wrap(sessionId: string, cli: CliCommand): Promise<SandboxedCommand>;
  /**
   * Starts making the session's folders (its HOME from the template) in the background, so that a
   * run's wrap or launcher, which waits for them, finds them made or under way. A failure is the
   * run's to report: its wrap or launcher tries again. `cli`: the CLI the session runs, whose
   * first-start files a new HOME gets (home-seeds.ts).
   */
  prepare(sessionId: string, cli?: SessionCli): void;
  /** An executable that runs `cli.command` in the session's sandbox with the arguments it is given. */
  launcher(sessionId: string, runId: string, cli: Omit<CliCommand, 'args' | 'stdin'>): Promise<SandboxLauncher>;
  /**
   * Writes the files of a session's MCP servers into its MCP folder (replacing earlier ones), which
   * the session's sandbox shows read-only, and answers the folder's path as the CLI sees it. Rejects
   * with config_invalid where no sandbox gives the session a folder of its own.
   */
  mcpFolder(sessionId: string, files: McpFile[]): Promise<string>;
  /** The sessions that have folders (HOME, TMP) here. */
  sessions(): Promise<string[]>;
  /** The session is over: its HOME and TMP are removed. */
  release(sessionId: string): Promise<void>;
  /** Stops what the sandbox runs for all sessions (the egress proxy). */
  close(): Promise<void>;
}

export interface SandboxedCommand extends CliCommand {
  /** The CLI's own exit, read from the spawned process's (bwrap reports a CLI killed by signal N as status 128 + N). */
  exitOf(exit: ProcessExit): ProcessExit;
  /**
   * Kills what is left of the run outside its process group, once the CLI is gone; absent where the
   * sandbox needs none (bwrap's PID namespace ends with the run).
   */
  reap?(): void;
}

export interface SandboxLauncher {
  /** The executable to give the SDK in place of the CLI's path. */
  command: string;
  /** The environment to give the SDK for it. */
  env: Record<string, string>;
  /** The run is over: the launcher goes. */
  dispose(): Promise<void>;
}

