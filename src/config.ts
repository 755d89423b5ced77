import { hostname, tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { ConfigError } from './config-error.js';
import type { Spawner } from './backends/spawn-child.js';
import type { LaneOverride } from './lanes/policies.js';
import { loadTenants } from './tenants-file.js';
import { DEFAULT_RATE, type TenantRate, type TenantsSettings } from './tenants.js';

/**
 * Every setting and limit of the service, read once from the environment. Each one is documented in
 * README.md under "Configuration"; an invalid value stops start-up with a message naming the variable.
 */
export interface AsmConfig {
  host: string;
  port: number;
  nodeName: string;
  /** Parent of the tenants' default workspace roots; the keyless quick start's own root. */
  workspaceRoot: string;
  /** ASM_TENANTS_FILE and ASM_API_KEYS (keys as SHA-256 digests only). Keyless: no auth, and only loopback binds are allowed. */
  tenants: TenantsSettings;
  /** Environment names passed to every CLI, besides the base set and the provider's own variables. */
  passEnv: string[];
  /** Providers refused at session creation (e.g. `shell` on a shared host). */
  disabledProviders: Set<string>;
  /** Explicit binary paths, by provider name (ASM_<NAME>_BIN). */
  binaries: Record<string, string>;
  /** ASM_PREWARM (`claude:2`): how many processes of each provider may wait prewarmed for their sessions' first runs. */
  prewarm: Record<string, number>;
  limits: Limits;
  /** Lane overrides and additions (ASM_LANES, JSON array of partial lane configs keyed by id; `runs: true` marks a run lane). */
  laneOverrides: LaneOverride[];
  globalConcurrency?: number;
  dlqSize: number;
  logLevel: string;
  /** One `request completed` line per answered request (ASM_ACCESS_LOG, `on` or `off`; http/access-log.ts). */
  accessLog: boolean;
  /** Prometheus metrics on GET /metrics (ASM_METRICS, `on` or `off`); off, nothing is counted and the route is gone. */
  metrics: boolean;
  /** How long a running run's writes wait for an unreachable store before the run fails. */
  outageMs: number;
  /** Distributed mode, when REDIS_URL is set: state in Redis, scheduling through BullMQ. */
  redis?: RedisSettings;
  cluster: ClusterSettings;
  /** Lowest layer of the remote options' precedence (ASM_REMOTE_DEFAULTS, a JSON object of driver_opts keys). */
  remoteDefaults: Record<string, unknown>;
  /**
   * Whether requests are limited per tenant (ASM_RATE_LIMIT; `0` turns it off), and the rate of a
   * tenant whose configuration names none (`max/window_ms`).
   */
  rateLimit: TenantRate | null;
  /** Hosts a session's ssh execution surface may name (ASM_SSH_HOSTS); empty refuses the ssh surface. */
  sshHosts: string[];
  /** Set when this process is an `asm worker` (from its command line): it executes remote_node runs only. */
  worker?: WorkerSettings;
  /** Origins whose pages may open the WebSocket (ASM_ALLOWED_ORIGINS); an upgrade with any other Origin header is refused. */
  allowedOrigins: string[];
  /** The only directory ssh `identity_file` and `known_hosts_file` may name (ASM_SSH_FILES_DIR); unset refuses both fields. */
  sshFilesDir?: string;
  /** The sandbox around every local agent CLI (src/backends/sandbox.ts). */
  sandbox: SandboxSettings;
  /** How the CLIs and git start (ASM_SPAWNER): `posix_spawn` (native/spawn.c, fork where it is not built) or `fork` (src/backends/spawn-child.ts). */
  spawner: Spawner;
  /** Session workspaces over the API: uploads, git clones, the diff of every run. */
  workspaces: WorkspaceSettings;
}

export interface WorkspaceSettings {
  /** ASM_WORKSPACE_DIFFS: `on` (default) snapshots the workspace at each run's start and diffs it at its end; `off` keeps no diffs. */
  diffs: boolean;
  /** ASM_SHADOW_ROOT: where each session's shadow repository (the snapshots its diffs compare) lives, outside every workspace. */
  shadowRoot: string;
  /** ASM_DIFF_MAX_BYTES: the largest patch kept with a run; a larger one is dropped and its summary kept. */
  diffMaxBytes: number;
  /** ASM_DIFF_MAX_FILES: the most files a diff summary lists. */
  diffMaxFiles: number;
  /** ASM_DIFF_STAT_MAX_ENTRIES: the most files and folders a workspace may hold for its stat data to stand in for a snapshot's `git add`; 0: git always. */
  diffStatMaxEntries: number;
  /** ASM_GIT_TIMEOUT_MS: a snapshot, diff or clone that takes longer is stopped. */
  gitTimeoutMs: number;
  /** ASM_WORKSPACE_GIT_SCHEMES: the URL schemes `workspace.git.url` may use (https by default; `file` only where listed). */
  gitSchemes: string[];
  /** ASM_MAX_UPLOAD_BYTES and ASM_MAX_UPLOAD_FILES: one upload's bounds, where a tenant's quotas are not lower. */
  uploadBytes: number;
  uploadFiles: number;
  /** ASM_FILES_PAGE_MAX: the most entries one page of a folder listing holds. */
  listPageMax: number;
}

const GIT_SCHEMES = new Set(['https', 'http', 'ssh', 'git', 'file']);

function workspaceSettings(env: Env): WorkspaceSettings {
  const gitSchemes = env.ASM_WORKSPACE_GIT_SCHEMES === undefined ? ['https'] : list(env, 'ASM_WORKSPACE_GIT_SCHEMES');
  const unknown = gitSchemes.find((scheme) => !GIT_SCHEMES.has(scheme));
  if (unknown) throw new ConfigError('ASM_WORKSPACE_GIT_SCHEMES', `"${unknown}" is not one of ${[...GIT_SCHEMES].join(', ')}`);
  const diffs = env.ASM_WORKSPACE_DIFFS || 'on';
  if (diffs !== 'on' && diffs !== 'off') throw new ConfigError('ASM_WORKSPACE_DIFFS', `expected on or off, got "${diffs}"`);
  return {
    diffs: diffs === 'on',
    shadowRoot: resolve(env.ASM_SHADOW_ROOT || join(tmpdir(), `asm-shadow-${process.getuid?.() ?? 0}`)),
    diffMaxBytes: int(env, 'ASM_DIFF_MAX_BYTES', 1024 * 1024, 1024),
    diffMaxFiles: int(env, 'ASM_DIFF_MAX_FILES', 1_000, 1),
    diffStatMaxEntries: int(env, 'ASM_DIFF_STAT_MAX_ENTRIES', 128, 0),
    gitTimeoutMs: int(env, 'ASM_GIT_TIMEOUT_MS', 120_000, 100),
    gitSchemes,
    uploadBytes: int(env, 'ASM_MAX_UPLOAD_BYTES', 256 * 1024 * 1024, 1),
    uploadFiles: int(env, 'ASM_MAX_UPLOAD_FILES', 10_000, 1),
    listPageMax: int(env, 'ASM_FILES_PAGE_MAX', 1_000, 1),
  };
}

export interface SandboxSettings {
  /** ASM_SANDBOX: `bwrap` (the default) or `none`, which must be said explicitly. */
  kind: 'bwrap' | 'none';
  /** ASM_SANDBOX_ROOT: where each session's sandbox HOME and TMP live, for the session's life. */
  root: string;
  /** ASM_SANDBOX_USER: the account CLIs run as where the service runs as root. */
  user: string;
  /** ASM_SANDBOX_READ_ONLY: more paths every sandbox sees, read-only (tools installed outside /usr). */
  readOnly: string[];
  /** ASM_SANDBOX_WRITABLE: paths every sandbox sees read-write, shared by all sessions (a package cache). */
  writable: string[];
  /** Paths masked inside every sandbox: ASM_SANDBOX_HIDE, and the service's own files named in its environment. */
  hide: string[];
  /** ASM_SANDBOX_HOME_TEMPLATE: a folder copied into each new session HOME (the CLIs' settings). */
  homeTemplate?: string;
  /** ASM_SANDBOX_ALLOWED_HOSTS: when set, the CLI reaches only these hosts (through a proxy); empty: the host network. */
  allowedHosts: string[];
  /** ASM_SANDBOX_SWEEP_MS: how often a process removes the folders of its closed sessions. */
  sweepMs: number;
  /**
   * ASM_SANDBOX_HOME_SETUP_MS: how long a CLI's first start may take when the sandbox makes what every
   * new HOME starts with (src/backends/home-seeds.ts); 0: never made, each CLI makes its own.
   */
  homeSetupMs: number;
  /**
   * ASM_SANDBOX_INIT: `native` (the default) starts each CLI through native/sandbox-init.c, one program
   * as the namespace's init, where it is built; `shell` through `sh`, `setpriv` and `env` (bwrap.ts).
   */
  init: 'native' | 'shell';
}

/** Files of the service that other settings name: hidden in the sandbox even where a bound folder holds them. */
const SERVICE_FILE_VARIABLES = ['ASM_TENANTS_FILE', 'ASM_SSH_FILES_DIR', 'ASM_REDIS_TLS_CA'];

function absolutePaths(env: Env, name: string): string[] {
  const paths = list(env, name);
  const relative = paths.find((path) => !isAbsolute(path));
  if (relative) throw new ConfigError(name, `paths must be absolute, got "${relative}"`);
  return paths.map((path) => resolve(path));
}

function sandboxSettings(env: Env): SandboxSettings {
  const kind = env.ASM_SANDBOX || 'bwrap';
  if (kind !== 'bwrap' && kind !== 'none') throw new ConfigError('ASM_SANDBOX', `expected bwrap or none, got "${kind}"`);
  const template = env.ASM_SANDBOX_HOME_TEMPLATE;
  if (template && !isAbsolute(template)) throw new ConfigError('ASM_SANDBOX_HOME_TEMPLATE', `must be an absolute path, got "${template}"`);
  const init = env.ASM_SANDBOX_INIT || 'native';
  if (init !== 'native' && init !== 'shell') throw new ConfigError('ASM_SANDBOX_INIT', `expected native or shell, got "${init}"`);
  return {
    kind,
    root: resolve(env.ASM_SANDBOX_ROOT || join(tmpdir(), `asm-sandbox-${process.getuid?.() ?? 0}`)),
    user: env.ASM_SANDBOX_USER || 'nobody',
    readOnly: absolutePaths(env, 'ASM_SANDBOX_READ_ONLY'),
    writable: absolutePaths(env, 'ASM_SANDBOX_WRITABLE'),
    hide: [...absolutePaths(env, 'ASM_SANDBOX_HIDE'), ...SERVICE_FILE_VARIABLES.flatMap((name) => (env[name] ? [resolve(env[name])] : []))],
    homeTemplate: template ? resolve(template) : undefined,
    allowedHosts: list(env, 'ASM_SANDBOX_ALLOWED_HOSTS'),
    sweepMs: int(env, 'ASM_SANDBOX_SWEEP_MS', 60_000, 100),
    homeSetupMs: int(env, 'ASM_SANDBOX_HOME_SETUP_MS', 30_000, 0),
    init,
  };
}

export interface WorkerSettings {
  pool: string;
  /** Runs executing at once; more are queued on the worker. */
  capacity: number;
  /** Providers this worker serves; null: every provider that is not disabled. */
  providers: string[] | null;
  /** Runs must present this as remote_cookie (ASM_NODE_COOKIE or --cookie); null: they must present none. */
  cookie: string | null;
  /** Its files endpoint once it listens (asm worker --files-port): the URL it is reached at and its bearer token. */
  files?: { url: string; token: string };
}

export interface RedisSettings {
  /** `redis://` or `rediss://` (TLS), optionally with an ACL user: `redis://user:password@host:port/db`. */
  url: string;
  /** Prefix of every key; BullMQ's queues live under `{<prefix>}` so each queue hashes to one Cluster slot. */
  prefix: string;
  /** PEM file of the CA that signed the server's certificate, for `rediss://` with a private CA. */
  tlsCaFile?: string;
  /** How long a request waits on Redis before it is answered 503 not_ready. */
  commandTimeoutMs: number;
}

/** How the processes of a deployment watch each other (only distributed mode has more than one). */
export interface ClusterSettings {
  heartbeatMs: number;
  /** A process whose heartbeat is older than this is lost; its runs end with node_lost after at most nodeTtlMs + sweepMs. */
  nodeTtlMs: number;
  /** Period of the sweeps that expire approval deadlines and end runs of lost processes. */
  sweepMs: number;
  /** How long an interrupt or approval decision handed to a run's owner may wait for its acknowledgement. */
  controlTimeoutMs: number;
  /** BullMQ job lock: a job whose holder stops renewing it for this long is run again elsewhere. */
  jobLockMs: number;
  /** How often each process looks for jobs whose lock expired. */
  stalledIntervalMs: number;
  /** How many times a queued run is handed to its lane again after its command failed before reading it (Admission.watch). */
  runHandOvers: number;
}

export interface Limits {
  /** Largest HTTP request body. */
  bodyBytes: number;
  /** Largest prompt, in UTF-8 bytes. */
  promptBytes: number;
  /** Longest stdout line a CLI may print before the run fails with buffer_overflow. */
  lineBytes: number;
  /** stderr kept per run for error messages. */
  stderrBytes: number;
  /** Output (event payloads) one run may produce; beyond it the run is stopped with quota_exceeded. */
  runOutputBytes: number;
  /** Events kept per session for replay; older ones are trimmed. */
  eventsPerSession: number;
  /** Bytes a WebSocket client may fall behind before it is closed with 4008. */
  wsBufferBytes: number;
  wsHeartbeatMs: number;
  /** A session's default idle_timeout_ms: how long a CLI may print nothing before it is stopped (0: never). */
  idleTimeoutMs: number;
  /** After an interrupt, how long the CLI gets to stop before SIGTERM. */
  interruptGraceMs: number;
  /** After SIGTERM, how long before SIGKILL. */
  killGraceMs: number;
  /** After the terminal event, how long the CLI gets to exit on its own. */
  exitGraceMs: number;
  /** Sessions kept at once (open or closed but retained). */
  maxSessions: number;
  /** Page size cap for event listing. */
  eventPageMax: number;
  /** How long `wait: true` may hold a request before answering with the run as it stands. */
  waitMaxMs: number;
  /** How long a lane command a request waits on (close, interrupt, decide) may wait to start before it is withdrawn (503). */
  commandWaitMs: number;
  shutdownDrainMs: number;
  /** MCP servers one session may configure (0: none). */
  mcpServers: number;
  /** The largest `mcp_servers` of a session, as JSON bytes. */
  mcpConfigBytes: number;
  /** How long a warm session's agent process waits idle for the session's next run, unless the session says. */
  warmIdleMs: number;
  /** Idle warm agent processes kept at once on a node; beyond it the longest idle one is stopped. */
  maxWarmProcesses: number;
  /** Memory (RSS, MiB) the node's agent processes may use before a new agent run waits; 0: no limit. */
  maxAgentMemoryMb: number;
  /** How often a run waiting for memory measures again. */
  agentMemoryPollMs: number;
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) throw new ConfigError(name, `expected an integer >= ${min}, got "${raw}"`);
  return value;
}

function list(env: Env, name: string): string[] {
  return (env[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** `max/window_ms`, e.g. `6000/60000`; `0` turns the limit off. */
function parseRateLimit(env: Env): TenantRate | null {
  const raw = env.ASM_RATE_LIMIT ?? `${DEFAULT_RATE.max}/${DEFAULT_RATE.windowMs}`;
  if (raw.trim() === '0') return null;
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(raw);
  const max = Number(match?.[1]);
  const windowMs = Number(match?.[2]);
  if (!match || max < 1 || windowMs < 100) throw new ConfigError('ASM_RATE_LIMIT', `expected max/window_ms with max >= 1 and window_ms >= 100 (or 0 for none), got "${raw}"`);
  return { max, windowMs };
}

function parseLanes(env: Env): AsmConfig['laneOverrides'] {
  const raw = env.ASM_LANES;
  if (!raw) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError('ASM_LANES', 'must be a JSON array of lane configs');
  }
  if (!Array.isArray(parsed) || parsed.some((l) => typeof l !== 'object' || l === null || typeof l.id !== 'string')) {
    throw new ConfigError('ASM_LANES', 'must be a JSON array of objects, each with a string "id"');
  }
  return parsed as AsmConfig['laneOverrides'];
}

function parseBinaries(env: Env): Record<string, string> {
  const binaries: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    const match = /^ASM_([A-Z0-9]+)_BIN$/.exec(name);
    if (match && value) binaries[match[1].toLowerCase()] = value;
  }
  return binaries;
}

/** `provider:count,…`, e.g. `claude:2`; which providers can be prewarmed is checked at start (app.ts). */
function parsePrewarm(env: Env): Record<string, number> {
  const prewarm: Record<string, number> = {};
  for (const entry of list(env, 'ASM_PREWARM')) {
    const match = /^([a-z0-9_-]+):(\d+)$/.exec(entry);
    if (!match) throw new ConfigError('ASM_PREWARM', `expected provider:count entries separated by commas (claude:2), got "${entry}"`);
    prewarm[match[1]!] = Number(match[2]);
  }
  return prewarm;
}

function jsonObject(env: Env, name: string): Record<string, unknown> {
  const raw = env[name];
  if (!raw) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError(name, 'must be a JSON object');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(name, 'must be a JSON object');
  return parsed as Record<string, unknown>;
}

function origins(env: Env): string[] {
  return list(env, 'ASM_ALLOWED_ORIGINS').map((origin) => {
    let parsed: URL | undefined;
    try {
      parsed = new URL(origin);
    } catch {
      // reported below
    }
    if (parsed?.origin !== origin) throw new ConfigError('ASM_ALLOWED_ORIGINS', `"${origin}" is not an origin such as https://app.example.com (scheme, host and port only)`);
    return origin;
  });
}

function redisUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError('REDIS_URL', 'must be a URL such as redis://127.0.0.1:6379 or rediss://user:password@host:6380');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new ConfigError('REDIS_URL', `scheme must be redis: or rediss:, got ${url.protocol}`);
  return raw;
}

function onOff(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (!raw) return fallback;
  if (raw !== 'on' && raw !== 'off') throw new ConfigError(name, `must be on or off, got "${raw}"`);
  return raw === 'on';
}

export function loadConfig(env: Env = process.env): AsmConfig {
  const globalConcurrency = env.ASM_GLOBAL_CONCURRENCY ? int(env, 'ASM_GLOBAL_CONCURRENCY', 0, 1) : undefined;
  const workspaceRoot = resolve(env.ASM_WORKSPACE_ROOT || process.cwd());
  const rateLimit = parseRateLimit(env);
  return {
    host: env.ASM_HOST || '127.0.0.1',
    port: int(env, 'ASM_PORT', 8787),
    nodeName: env.ASM_NODE_NAME || hostname(),
    workspaceRoot,
    tenants: loadTenants(env, workspaceRoot, rateLimit ?? DEFAULT_RATE),
    passEnv: list(env, 'ASM_PASS_ENV'),
    rateLimit,
    disabledProviders: new Set(list(env, 'ASM_DISABLED_PROVIDERS')),
    binaries: parseBinaries(env),
    prewarm: parsePrewarm(env),
    limits: {
      bodyBytes: int(env, 'ASM_MAX_BODY_BYTES', 1024 * 1024, 1024),
      promptBytes: int(env, 'ASM_MAX_PROMPT_BYTES', 256 * 1024, 1),
      lineBytes: int(env, 'ASM_MAX_LINE_BYTES', 4 * 1024 * 1024, 1024),
      stderrBytes: int(env, 'ASM_MAX_STDERR_BYTES', 64 * 1024, 1024),
      runOutputBytes: int(env, 'ASM_MAX_RUN_OUTPUT_BYTES', 16 * 1024 * 1024, 1024),
      eventsPerSession: int(env, 'ASM_MAX_EVENTS_PER_SESSION', 50_000, 100),
      wsBufferBytes: int(env, 'ASM_WS_MAX_BUFFER_BYTES', 8 * 1024 * 1024, 1024),
      wsHeartbeatMs: int(env, 'ASM_WS_HEARTBEAT_MS', 30_000, 100),
      idleTimeoutMs: int(env, 'ASM_IDLE_TIMEOUT_MS', 300_000, 0),
      interruptGraceMs: int(env, 'ASM_INTERRUPT_GRACE_MS', 5_000, 0),
      killGraceMs: int(env, 'ASM_KILL_GRACE_MS', 2_000, 0),
      exitGraceMs: int(env, 'ASM_EXIT_GRACE_MS', 2_000, 0),
      maxSessions: int(env, 'ASM_MAX_SESSIONS', 10_000, 1),
      eventPageMax: int(env, 'ASM_EVENT_PAGE_MAX', 1_000, 1),
      waitMaxMs: int(env, 'ASM_WAIT_MAX_MS', 15 * 60_000, 1),
      commandWaitMs: int(env, 'ASM_COMMAND_WAIT_MS', 30_000, 1),
      shutdownDrainMs: int(env, 'ASM_SHUTDOWN_DRAIN_MS', 10_000, 0),
      mcpServers: int(env, 'ASM_MCP_MAX_SERVERS', 16, 0),
      mcpConfigBytes: int(env, 'ASM_MCP_MAX_CONFIG_BYTES', 64 * 1024, 1),
      warmIdleMs: int(env, 'ASM_WARM_IDLE_MS', 300_000, 100),
      maxWarmProcesses: int(env, 'ASM_MAX_WARM_PROCESSES', 16, 0),
      maxAgentMemoryMb: int(env, 'ASM_MAX_AGENT_MEMORY_MB', 0, 0),
      agentMemoryPollMs: int(env, 'ASM_AGENT_MEMORY_POLL_MS', 250, 10),
    },
    laneOverrides: parseLanes(env),
    globalConcurrency,
    dlqSize: int(env, 'ASM_DLQ_SIZE', 1_000, 0),
    logLevel: env.ASM_LOG_LEVEL || 'info',
    accessLog: onOff(env, 'ASM_ACCESS_LOG', true),
    metrics: onOff(env, 'ASM_METRICS', true),
    outageMs: int(env, 'ASM_REDIS_OUTAGE_MS', 60_000, 0),
    redis: env.REDIS_URL
      ? {
          url: redisUrl(env.REDIS_URL),
          prefix: env.ASM_REDIS_PREFIX || 'asm',
          tlsCaFile: env.ASM_REDIS_TLS_CA || undefined,
          commandTimeoutMs: int(env, 'ASM_REDIS_COMMAND_TIMEOUT_MS', 2_000, 50),
        }
      : undefined,
    cluster: {
      heartbeatMs: int(env, 'ASM_NODE_HEARTBEAT_MS', 2_000, 50),
      nodeTtlMs: int(env, 'ASM_NODE_TTL_MS', 10_000, 100),
      sweepMs: int(env, 'ASM_SWEEP_MS', 250, 10),
      controlTimeoutMs: int(env, 'ASM_CONTROL_TIMEOUT_MS', 5_000, 10),
      jobLockMs: int(env, 'ASM_JOB_LOCK_MS', 30_000, 100),
      stalledIntervalMs: int(env, 'ASM_STALLED_INTERVAL_MS', 30_000, 100),
      runHandOvers: int(env, 'ASM_RUN_HAND_OVERS', 3, 0),
    },
    remoteDefaults: jsonObject(env, 'ASM_REMOTE_DEFAULTS'),
    sshHosts: list(env, 'ASM_SSH_HOSTS'),
    allowedOrigins: origins(env),
    sshFilesDir: env.ASM_SSH_FILES_DIR ? resolve(env.ASM_SSH_FILES_DIR) : undefined,
    sandbox: sandboxSettings(env),
    spawner: spawnerOf(env),
    workspaces: workspaceSettings(env),
  };
}

function spawnerOf(env: Env): Spawner {
  const spawner = env.ASM_SPAWNER || 'posix_spawn';
  if (spawner !== 'posix_spawn' && spawner !== 'fork') throw new ConfigError('ASM_SPAWNER', `expected posix_spawn or fork, got "${spawner}"`);
  return spawner;
}
