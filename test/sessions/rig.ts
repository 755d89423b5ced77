import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AgentMemoryGate } from '../../src/backends/agent-memory.js';
import { CoreBackend } from '../../src/backends/core.js';
import { ShadowRepos, shadowLimits } from '../../src/backends/shadow-git.js';
import { createSandbox } from '../../src/backends/sandbox.js';
import { SdkLoader } from '../../src/backends/sdk-loader.js';
import { loadConfig, type AsmConfig } from '../../src/config.js';
import { AsmError } from '../../src/errors/kinds.js';
import { createInProcessEngine, DEFAULT_LANES, mergeLanes, runLanes, type LaneEngine, type LaneOverride } from '../../src/lanes/index.js';
import type { Cluster, SelfReport } from '../../src/nodes/cluster.js';
import { LocalCluster } from '../../src/nodes/local.js';
import { loadProviders } from '../../src/providers/registry.js';
import type { ApprovalDecision } from '../../src/providers/types.js';
import type { CreateRunBody, CreateSessionBody } from '../../src/schemas/api.js';
import { TERMINAL_KINDS, type AsmEvent } from '../../src/schemas/events.js';
import type { ActiveRuns } from '../../src/sessions/active-runs.js';
import { Admission } from '../../src/sessions/admission.js';
import { ApprovalBook } from '../../src/sessions/approvals.js';
import { CommandBus } from '../../src/sessions/commands.js';
import { ControlRouter } from '../../src/sessions/control.js';
import { RunExecutor } from '../../src/sessions/execution.js';
import { Placement } from '../../src/sessions/placement.js';
import { Quotas } from '../../src/sessions/quotas.js';
import { RunRecorder } from '../../src/sessions/recorder.js';
import { RunDiffs } from '../../src/sessions/run-diffs.js';
import { SessionLifecycle } from '../../src/sessions/session-lifecycle.js';
import { Sweeper } from '../../src/sessions/sweeps.js';
import { waitForRun } from '../../src/sessions/wait-for-run.js';
import { createMemoryStore } from '../../src/store/memory.js';
import type { RunRecord, RunStore, SessionRecord, Store } from '../../src/store/types.js';
import { keyDigest, TenantDirectory } from '../../src/tenants.js';
import { VERSION } from '../../src/version.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { SANDBOX_ENV, scratchDir } from '../helpers/sandbox.js';

/**
 * The session layers wired from real parts, for tests that drive one layer directly: the memory
 * store, the in-process lane engine, a LocalCluster, and the core backend spawning the fake claude
 * (test/fixtures/bin/fake-claude.mjs, which picks its transcript by a `[fixture:NAME]` marker in the
 * prompt and exits 3 when ASM writes a line the transcript does not expect).
 */

export const FAKE_CLAUDE = new URL('../fixtures/bin/fake-claude.mjs', import.meta.url).pathname;
export const TENANT = 'tenant-a';
export const REPORT: SelfReport = () => ({ name: 'test-node', role: 'api', version: VERSION, node_version: process.versions.node, providers: ['claude'], missing_clis: [], capacity: 4, load: 0, pool: 'default', sandbox: 'bwrap' });

export interface RigOptions {
  /** Lane overrides (ASM_LANES). */
  lanes?: LaneOverride[];
  /** ASM_REDIS_OUTAGE_MS. */
  outageMs?: number;
  /** Wraps the memory store, e.g. with an outage (withOutage). */
  wrapStore?: (store: Store) => Store;
  /** Another store instead of the memory store (a Redis store); the caller closes it. */
  store?: Store;
  /** The cluster; a LocalCluster of 'test-instance' by default. */
  cluster?: Cluster;
  /** More settings, as environment variables (ASM_RUN_HAND_OVERS …). */
  env?: Record<string, string>;
  /** The layers' logger; a silent one by default. */
  log?: pino.Logger;
}

export interface Rig {
  config: AsmConfig;
  store: Store;
  engine: LaneEngine;
  cluster: Cluster;
  active: ActiveRuns;
  commands: CommandBus;
  recorder: RunRecorder;
  approvals: ApprovalBook;
  control: ControlRouter;
  placement: Placement;
  quotas: Quotas;
  lifecycle: SessionLifecycle;
  admission: Admission;
  executor: RunExecutor;
  /** Its timer is not started: tests sweep when they choose. */
  sweeper: Sweeper;
  log: pino.Logger;
  /** A claude session of TENANT. */
  session(body?: Partial<CreateSessionBody>): Promise<SessionRecord>;
  /** Admit a run (Admission.submit). */
  submit(sessionId: string, prompt: string, body?: Partial<CreateRunBody>): Promise<RunRecord>;
  /** Events of a session (of one run when runId is given), oldest first. */
  events(sessionId: string, runId?: string): Promise<AsmEvent[]>;
  /** The first event of the session that passes `test`, stored already or the next one appended. */
  event(sessionId: string, test: (event: AsmEvent) => boolean): Promise<AsmEvent>;
  /** The run once terminal; fails the test if it is not terminal within timeoutMs (10 s). */
  ended(runId: string, timeoutMs?: number): Promise<RunRecord>;
  /** Lines ASM wrote to the fake claude's stdin, parsed. */
  written(): any[];
  close(): Promise<void>;
}

export async function makeRig(options: RigOptions = {}): Promise<Rig> {
  const workspace = mkdtempSync(join(tmpdir(), 'asm-layers-'));
  const logDir = scratchDir('asm-layers-log-');
  const stdinLog = join(logDir, 'stdin.jsonl');
  process.env.FAKE_CLAUDE_LOG = stdinLog;
  const providers = await loadProviders();
  // The tenants these layers are driven as: every provider (tenant-b all but shell), and the workspace root as their own.
  const tenantsFile = join(logDir, 'tenants.json');
  const grant = (id: string, granted: string[]) => ({ id, key_sha256: [keyDigest(`key-of-${id}-0123456789`)], providers: granted, workspace_root: workspace });
  const every = [...providers.keys()];
  writeFileSync(tenantsFile, JSON.stringify([grant(TENANT, every), grant('tenant-b', every.filter((p) => p !== 'shell'))]));
  const config = loadConfig({
    ASM_TENANTS_FILE: tenantsFile,
    ...SANDBOX_ENV,
    ASM_WORKSPACE_ROOT: workspace,
    ASM_SHADOW_ROOT: join(logDir, 'shadow'),
    ASM_CLAUDE_BIN: FAKE_CLAUDE,
    ASM_NODE_NAME: 'test-node',
    ASM_PASS_ENV: 'FAKE_CLAUDE_LOG',
    ASM_KILL_GRACE_MS: '200',
    ASM_EXIT_GRACE_MS: '500',
    ASM_INTERRUPT_GRACE_MS: '500',
    ASM_REDIS_OUTAGE_MS: String(options.outageMs ?? 5_000),
    ...options.env,
  });
  const log = options.log ?? pino({ level: 'silent' });
  const memory = options.store ?? createMemoryStore({ eventsPerSession: config.limits.eventsPerSession });
  const store = options.wrapStore ? options.wrapStore(memory) : memory;
  const engine = createInProcessEngine({ lanes: mergeLanes(DEFAULT_LANES, options.lanes ?? []), dlqSize: 100 });
  const tenants = await TenantDirectory.open(config.tenants, { known: [...providers.keys()], disabled: config.disabledProviders, workspaceRoot: workspace, prepareRoots: true });
  const cluster =
    options.cluster ??
    new LocalCluster('test-instance', REPORT);
  const active: ActiveRuns = new Map();
  const commands = new CommandBus(engine, config.limits.commandWaitMs);
  const recorder = new RunRecorder({ store, cluster, active, outageMs: config.outageMs, log });
  const decideOnControlLane = (id: string, decision: ApprovalDecision, reason: string) => commands.call('control', 'approval.decide', { id, decision, reason });
  const approvals = new ApprovalBook({ store, recorder, active, cluster, decideOnControlLane, log });
  const control = new ControlRouter({ store, engine, cluster, recorder, approvals, active, controlTimeoutMs: config.cluster.controlTimeoutMs });
  // No SDK here: the fake CLIs speak the core lane's protocol, so `lane: auto` resolves to core.
  const sdks = new SdkLoader((specifier) => Promise.reject(new Error(`${specifier} is not loaded in these tests`)));
  const placement = new Placement({ engine, cluster, binaries: config.binaries, sdks, remoteAvailable: false, nodeName: config.nodeName, ssh: { hosts: [], filesDir: undefined }, runLanes: runLanes(options.lanes ?? []) });
  const quotas = new Quotas({ store, cluster, tenants, log });
  const lifecycle = new SessionLifecycle({ config, store, cluster, providers, tenants, placement, quotas, control, log });
  const admission = new Admission({ config, store, cluster, commands, recorder, placement, quotas, providers, tenants, log });
  const sandbox = await createSandbox(config.sandbox, log);
  const shadow = new ShadowRepos(config.workspaces.shadowRoot, shadowLimits(config.workspaces));
  const diffs = new RunDiffs({ shadow, store, enabled: config.workspaces.diffs, log });
  const core = new CoreBackend(config.limits, sandbox);
  const agentMemory = new AgentMemoryGate(config.limits, () => core.processGroups(), core.warm);
  const executor = new RunExecutor({ config, store, cluster, providers, backends: { core }, memory: agentMemory, recorder, tenants, approvals, control, active, diffs, log });
  const sweeper = new Sweeper({ store, cluster, recorder, commands, active, executing: executor.executing, sweepMs: 60_000, ownRunsOnly: false, log });
  commands.registerAll({
    'session.close': (p) => lifecycle.close(p.id),
    'run.interrupt': (p) => control.interrupt(p.id),
    'approval.decide': (p) => control.decide(p.id, p.decision, p.reason),
    'node.end_lost_runs': (p) => sweeper.endLostRuns(p.run_ids),
    'run.execute': (p, ctx) => executor.execute(p.run_id, ctx, p.session_id),
  });
  await cluster.start((request) => control.handle(request));
  await engine.start();

  const events = (sessionId: string, runId?: string) => store.events.read(sessionId, { after: 0, runId, limit: Number.MAX_SAFE_INTEGER });
  return {
    config,
    store,
    engine,
    cluster,
    active,
    commands,
    recorder,
    approvals,
    control,
    placement,
    quotas,
    lifecycle,
    admission,
    executor,
    sweeper,
    log,
    session: (body = {}) => lifecycle.create(TENANT, { provider: 'claude', ...body }),
    submit: (sessionId, prompt, body = {}) => admission.submit(TENANT, sessionId, { prompt, ...body }),
    events,
    event(sessionId, test) {
      return new Promise<AsmEvent>((resolve, reject) => {
        const unsubscribe = store.events.subscribe(sessionId, (event) => {
          if (!test(event)) return;
          unsubscribe();
          resolve(event);
        });
        events(sessionId).then((stored) => {
          const found = stored.find(test);
          if (!found) return;
          unsubscribe();
          resolve(found);
        }, reject);
      });
    },
    async ended(runId, timeoutMs = 10_000) {
      const run = await waitForRun(store, runId, timeoutMs);
      if (!TERMINAL_STATES.has(run.state)) throw new Error(`run ${runId} is still ${run.state} after ${timeoutMs} ms`);
      return run;
    },
    written() {
      return readJsonLines(stdinLog);
    },
    async close() {
      // CLIs still running (a test that failed midway) are stopped, so none outlives the test.
      const running = [...active.values()].flatMap((run) => (run.backend ? [run.backend] : []));
      await Promise.all(running.map((backend) => backend.interrupt('shutdown').catch(() => undefined)));
      await Promise.all(running.map((backend) => backend.done));
      await engine.close();
      await cluster.close();
      delete process.env.FAKE_CLAUDE_LOG;
      rmSync(workspace, { recursive: true, force: true });
    },
  };
}

const TERMINAL_STATES = new Set(['completed', 'failed', 'interrupted']);

/** The AsmError a promise rejects with; fails the test when it resolves or rejects with anything else. */
export async function refusal(promise: Promise<unknown>): Promise<AsmError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof AsmError)) throw new Error(`expected an AsmError, got ${String(err)}`);
  return err;
}

export function isTerminalEvent(event: AsmEvent): boolean {
  return TERMINAL_KINDS.has(event.kind);
}

/**
 * Fault injection on a real store: while `failNext(n)` has calls left to fail, each call to the
 * store (a read or a write; subscriptions aside) throws AsmError not_ready without reaching it, as
 * an unreachable Redis does.
 */
export function withOutage(store: Store): { store: Store; failNext(count: number, only?: () => boolean): void; failedCalls(): number } {
  let remaining = 0;
  let failed = 0;
  let failing = () => true;
  const faulty = <T extends object>(part: T): T =>
    new Proxy(part, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (typeof value !== 'function') return value;
        if (key === 'subscribe') return value.bind(target);
        return (...args: unknown[]) => {
          if (remaining > 0 && failing()) {
            remaining--;
            failed++;
            return Promise.reject(new AsmError('not_ready', 'store unreachable (injected outage)'));
          }
          return value.apply(target, args);
        };
      },
    });
  return {
    store: { ...store, sessions: faulty(store.sessions), runs: faulty(store.runs), approvals: faulty(store.approvals), events: faulty(store.events) },
    /** The next `count` store calls fail; with `only`, the next `count` for which it holds. */
    failNext(count, only = () => true) {
      remaining = count;
      failing = only;
    },
    failedCalls: () => failed,
  };
}

/** A call of the run store, as holdingRunCall sees it: a read, a read with a claim (RunStore.claimLocal) or an update of one run. */
export type RunCall = { method: 'get'; id: string } | { method: 'claimLocal'; id: string; owner: string } | { method: 'update'; id: string; patch: Partial<RunRecord> };

/**
 * Fault injection: the store holds each run-store call that `holds` picks until released, as a slow
 * store holds it in the middle of a lane command; `reached` once the first is held.
 */
export function holdingRunCall(holds: (call: RunCall) => boolean) {
  let reachedNow!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((resolve) => (reachedNow = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  const hold = async (call: RunCall) => {
    if (!holds(call)) return;
    reachedNow();
    await released;
  };
  const wrap = (store: Store): Store => {
    const runs: RunStore = Object.create(store.runs);
    runs.get = async (id) => {
      await hold({ method: 'get', id });
      return store.runs.get(id);
    };
    runs.claimLocal = async (id, owner) => {
      await hold({ method: 'claimLocal', id, owner });
      return store.runs.claimLocal(id, owner);
    };
    runs.update = async (id, patch) => {
      await hold({ method: 'update', id, patch });
      return store.runs.update(id, patch);
    };
    return { ...store, runs };
  };
  return { wrap, reached, release };
}

/** Fault injection: the store holds the executor's ownership write (its claim, or runs.update with an owner) until released. */
export const holdingOwnership = () => holdingRunCall((call) => call.method === 'claimLocal' || (call.method === 'update' && Boolean(call.patch.owner)));
