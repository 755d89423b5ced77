import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { agentBin, type AgentName } from '../../scripts/install-agents.js';
import { startServer, TERMINAL, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { startModelServer, type ModelServer } from './model-server.js';
import { offlineEnv, scratchHome } from './offline-env.js';

/**
 * What the agents suite shares: the per-CLI offline setup (offline-env.ts, re-exported here) and a
 * driver that runs one prompt through the service and collects its events.
 */

export { CODEX_MODEL, GEMINI_MODEL, offlineEnv, scratchHome } from './offline-env.js';

/**
 * Runs the service in-process with the real `name` CLI. The CLI's environment comes from this
 * process's environment through the service's allowlist, so the offline variables are set here and
 * named in ASM_PASS_ENV; `pointAt` re-targets them (e.g. at a closed port) between tests. The CLI
 * runs sandboxed, with a HOME of its session's: the config files written into the scratch home reach
 * it as the sandbox's home template, copied into each new session's HOME.
 */
export class AgentRig {
  server!: TestServer;
  private home = '';
  private names: string[] = [];
  /** This process's environment as it was before the rig changed it, restored by stop(). */
  private readonly saved = new Map<string, string | undefined>();

  constructor(readonly name: AgentName) {}

  /**
   * `settings`: more settings of the service (e.g. what its sandboxes show); `cliEnv`: more variables
   * for the CLI, passed through the service's allowlist; `logLines`: where the service's log lines go.
   */
  async start(model: ModelServer, settings: Record<string, string> = {}, cliEnv: Record<string, string> = {}, logLines?: string[]): Promise<void> {
    this.home = scratchHome();
    const bin = agentBin(this.name);
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run npm run install:agents (npm run test:agents does)`);
    this.pointAt(model.url);
    this.export(cliEnv);
    const passEnv = [...this.names, ...Object.keys(cliEnv)].join(',');
    // The installed SDKs too: the SDK lane drives the same real CLI.
    this.server = await startServer(
      { [`ASM_${this.name.toUpperCase()}_BIN`]: bin, ASM_PASS_ENV: passEnv, ASM_SANDBOX_HOME_TEMPLATE: this.home, ...settings },
      { sdks: true, logLines },
    );
  }

  /** Points the CLI at another model server URL for the runs that follow. */
  pointAt(baseUrl: string): void {
    // Not TMPDIR: the sandbox gives each session its own, and this process's temporary folders (the
    // test server's workspace) must stay out of the home that is copied into every session.
    const { TMPDIR: _sandboxed, ...env } = offlineEnv(this.name, this.home, baseUrl);
    this.names = Object.keys(env);
    this.export(env);
  }

  /** Sets variables in this process's environment (the CLI's source), to be restored by stop(). */
  private export(env: Record<string, string>): void {
    for (const name of Object.keys(env)) if (!this.saved.has(name)) this.saved.set(name, process.env[name]);
    Object.assign(process.env, env);
  }

  async stop(): Promise<void> {
    await this.server?.close();
    // A file may hold a second rig, which must find the real HOME (the CLI cache) and TMPDIR again.
    for (const [name, value] of this.saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    if (this.home) rmSync(this.home, { recursive: true, force: true });
  }

  /** A session of this provider in a fresh folder of the workspace. */
  async session(extra: Record<string, unknown> = {}): Promise<{ id: string; cwd: string }> {
    const folder = `w-${Math.random().toString(36).slice(2)}`;
    mkdirSync(join(this.server.workspace, folder));
    const res = await this.server.request('POST', '/v1/sessions', { provider: this.name, cwd: folder, ...extra });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return { id: res.body.id, cwd: join(this.server.workspace, folder) };
  }

  /**
   * Submits `prompt` and follows the run's events over the WebSocket. `during` runs while the run
   * is live (to answer approvals, interrupt, …); the promise resolves after the terminal event.
   */
  async run(
    session: { id: string },
    prompt: string,
    during: (live: LiveRun) => Promise<void> = async () => {},
    timeoutMs = 60_000,
  ): Promise<FinishedRun> {
    const ws = this.server.stream(`session_id=${session.id}&after=0`);
    await ws.opened;
    const submitted = await this.server.request('POST', `/v1/sessions/${session.id}/runs`, { prompt });
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);
    const runId: string = submitted.body.id;
    const live: LiveRun = {
      runId,
      event: (kind) => ws.next((f) => f.type === 'event' && f.event.run_id === runId && f.event.kind === kind, timeoutMs).then((f) => f.event),
    };
    await during(live);
    await ws.next((f) => f.type === 'event' && f.event.run_id === runId && TERMINAL.has(f.event.kind), timeoutMs);
    const events = ws.events().filter((e) => e.run_id === runId);
    ws.close();
    const run = (await this.server.request('GET', `/v1/runs/${runId}`)).body;
    return { run, events, kinds: kindsOf(events), terminal: events[events.length - 1] };
  }
}

export interface LiveRun {
  runId: string;
  /** The first event of this kind in the run (already seen or still to come). */
  event(kind: string): Promise<any>;
}

export interface FinishedRun {
  /** GET /v1/runs/{id}: state and result. */
  run: any;
  events: any[];
  kinds: string[];
  terminal: any;
}

/** The service's log line (given to AgentRig.start) that says a CLI's first-start seed is made (src/backends/home-seeds.ts), once it is. */
export function seedMade(logLines: string[]): Promise<Record<string, any>> {
  const made = () => logLines.map((text) => JSON.parse(text)).find((entry) => entry.msg === 'a new session HOME starts with what this CLI made on its first start');
  return waitFor(made, 'the seed of the CLI\'s first start', 30_000);
}

/**
 * The run's event kinds in order, without `stderr`: what a CLI writes to stderr (warnings, banners)
 * and when, relative to its stdout, is not part of the protocol.
 */
export function kindsOf(events: any[]): string[] {
  return events.map((e) => e.kind).filter((k) => k !== 'stderr');
}

/** The ids of the processes whose command line contains `marker` (read from /proc). */
function processesWith(marker: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(marker);
      } catch {
        return false; // the process ended while we looked
      }
    })
    .map(Number);
}

/** A process's group id (field 5 of /proc/<pid>/stat; the command name before it may hold spaces). */
export function processGroupOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

/**
 * SIGTERMs the process groups of the processes whose command line contains `marker`: the commands
 * this suite had a CLI start, which a CLI may leave behind. Returns how many processes matched.
 */
export function stopProcessesWith(marker: string): number {
  const pids = processesWith(marker);
  for (const pid of pids) {
    try {
      process.kill(-processGroupOf(pid), 'SIGTERM');
    } catch {
      // it ended between the listing and the signal
    }
  }
  return pids.length;
}

/** Resolves once a process whose command line contains `marker` runs (a CLI's tool has started). */
export async function untilRunning(marker: string): Promise<void> {
  await waitFor(() => processesWith(marker).length > 0, `a process running "${marker}"`, 15_000);
}

/** Resolves once no process whose command line contains `marker` is left (the tool was stopped). */
export async function untilGone(marker: string): Promise<void> {
  await waitFor(() => processesWith(marker).length === 0, `no process running "${marker}"`, 15_000);
}

/** A CLI spawned by the test itself (no service in between), to prove the model-server dialects. */
export interface CliProcess {
  child: ChildProcess;
  /** stdout, parsed line by line as it arrives. */
  lines: any[];
  stderr(): string;
  /** The first line matching `test` (already seen or still to come). */
  line(test: (line: any) => boolean, timeoutMs?: number): Promise<any>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Writes one JSON line to stdin. */
  send(message: unknown): void;
}

/**
 * Spawns the pinned `name` binary in its own process group, with only PATH and the offline
 * environment. stdin is a pipe when `stdin` is 'pipe' (a control channel), else /dev/null.
 */
export function spawnCli(name: AgentName, args: string[], opts: { cwd: string; env: Record<string, string>; stdin?: 'pipe' | 'ignore' }): CliProcess {
  const child = spawn(agentBin(name), args, {
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? '', ...opts.env },
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const lines: any[] = [];
  const waiters: Array<{ test: (line: any) => boolean; resolve: (line: any) => void }> = [];
  let stderr = '';
  let pending = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  child.stdout!.on('data', (chunk) => {
    pending += chunk;
    const complete = pending.split('\n');
    pending = complete.pop() ?? '';
    for (const text of complete.filter((l) => l.trim())) {
      const line = JSON.parse(text);
      lines.push(line);
      for (const waiter of waiters.filter((w) => w.test(line))) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    line(test, timeoutMs = 60_000) {
      const found = lines.find(test);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching line within ${timeoutMs} ms; stderr: ${stderr.slice(-500)}`)), timeoutMs);
        waiters.push({ test, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      });
    },
    send(message) {
      child.stdin!.write(`${JSON.stringify(message)}\n`);
    },
  };
}

/** A test file's model server, created in its beforeAll. */
export interface ModelContext {
  model: ModelServer;
}

/**
 * The hooks of a file that drives `name` through the service: the model server and the service with
 * the real CLI for the whole file, and after each test the CLI pointed back at the model server and
 * its request log emptied.
 */
export function useServiceRig(name: AgentName): ModelContext & { rig: AgentRig } {
  const ctx = { rig: new AgentRig(name) } as ModelContext & { rig: AgentRig };
  beforeAll(async () => {
    ctx.model = await startModelServer();
    await ctx.rig.start(ctx.model);
  });
  afterAll(async () => {
    await ctx.rig.stop();
    await ctx.model.close();
  });
  afterEach(() => {
    ctx.rig.pointAt(ctx.model.url);
    ctx.model.requests.length = 0;
  });
  return ctx;
}

/** The hooks of a file that spawns the CLIs itself: a model server, a scratch $HOME and a workspace in it. */
export function useDirectCli(): ModelContext & { home: string; workspace: string } {
  const home = scratchHome();
  const ctx = { home, workspace: mkdtempSync(join(home, 'work-')) } as ModelContext & { home: string; workspace: string };
  beforeAll(async () => {
    ctx.model = await startModelServer();
  });
  afterAll(async () => {
    await ctx.model.close();
    rmSync(home, { recursive: true, force: true });
  });
  afterEach(() => {
    ctx.model.requests.length = 0;
  });
  return ctx;
}
