/**
 * Interrupt benchmark (issue 14): from `POST /v1/runs/{id}/interrupt` to the run's terminal event on
 * a WebSocket client, for a shell run of `sleep 60`, embedded and in Redis mode; baseline: a bare
 * `sh -c 'sleep 60'` in its own process group sent SIGINT by Node, until its exit. Two conditions:
 *
 * - idle: the interrupted run is the only one;
 * - busy: every slot of the runs' lane (`prompt`) is taken by `sleep 60` runs of other sessions and
 *   more wait behind them, so each interrupt frees a slot that a waiting run takes at once. The
 *   interrupt travels on the control lane, which the busy lane cannot hold up.
 *
 * The sandbox is off (ASM_SANDBOX=none), as in the bare baseline. So are the workspace diffs
 * (ASM_WORKSPACE_DIFFS=off) unless `--diffs`: a run's end snapshot (`git add`, `git write-tree`) comes
 * before its terminal event, and its two git processes would be most of what this measures (their cost
 * is `bench -- diff`'s). Prints one JSON line.
 *
 * Each percentile is of the samples taken: 400 a condition by default (20 with `--quick`), so the p99
 * the target is read from is the fifth largest sample. Of 100 it was the largest, and one stall of the
 * host decided the target (bench/RESULTS.md, issue 14, eighth and thirty-seventh passes).
 *
 * Usage: npm run bench -- interrupt [--quick] [--diffs] [--samples N]
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { TERMINAL_KINDS } from '../src/schemas/events.js';
import { logger, numberFlag, openEventSocket, percentile, round, startAsm, type AsmServer, type Mode, inModes, withServers } from './asm-server.js';

const log = logger('interrupt');
const SLOTS = 2;

function summary(ms: number[]) {
  const sorted = [...ms].sort((a, b) => a - b);
  return { count: sorted.length, p50_ms: round(percentile(sorted, 50), 3), p99_ms: round(percentile(sorted, 99), 3), max_ms: round(sorted.at(-1) ?? NaN, 3) };
}

async function bareKill(samples: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < samples; i++) {
    const child = spawn('/bin/sh', ['-c', 'sleep 60'], { stdio: 'ignore', detached: true });
    await sleep(50);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const started = process.hrtime.bigint();
    process.kill(-child.pid!, 'SIGINT');
    await exited;
    out.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return out;
}

/** Watches the deployment's runs: each run's started and terminal events, by run id. */
function watch(asm: AsmServer, sessionIds: string[]) {
  const started = new Map<string, () => void>();
  const ended = new Map<string, (at: bigint) => void>();
  const startedRuns = new Set<string>();
  const sockets = sessionIds.map((id) => openEventSocket(asm, { session_id: id }));
  for (const socket of sockets) {
    socket.on((event, arrived) => {
      if (event.kind === 'run_started') {
        startedRuns.add(event.run_id);
        started.get(event.run_id)?.();
      }
      if (TERMINAL_KINDS.has(event.kind)) ended.get(event.run_id)?.(arrived);
    });
  }
  return {
    ready: Promise.all(sockets.map((s) => s.ready)),
    untilStarted: (runId: string) => (startedRuns.has(runId) ? Promise.resolve() : new Promise<void>((resolve) => started.set(runId, resolve))),
    untilEnded: (runId: string) => new Promise<bigint>((resolve) => ended.set(runId, resolve)),
    close: () => sockets.forEach((s) => s.close()),
  };
}

async function interruptOnce(asm: AsmServer, runs: ReturnType<typeof watch>, runId: string): Promise<number> {
  await runs.untilStarted(runId);
  await sleep(50);
  const ended = runs.untilEnded(runId);
  const started = process.hrtime.bigint();
  await asm.post(`/v1/runs/${runId}/interrupt`, {});
  return Number((await ended) - started) / 1e6;
}

async function benchMode(mode: Mode, redisUrl: string | undefined, samples: number, workspaceDiffs: 'on' | 'off') {
  const lanes = JSON.stringify([{ id: 'prompt', priority: 5, minConcurrency: 1, maxConcurrency: SLOTS }]);
  const asm = await startAsm(mode, redisUrl, { ASM_SANDBOX: 'none', ASM_WORKSPACE_DIFFS: workspaceDiffs, ASM_LANES: lanes });
  return withServers(
    [asm],
    async () => {
      const create = async () => (await asm.post('/v1/sessions', { provider: 'shell', queue: 'prompt' })).id as string;
      // Idle: one run at a time.
      const idleSession = await create();
      const idleRuns = watch(asm, [idleSession]);
      await idleRuns.ready;
      const idle: number[] = [];
      for (let i = 0; i < samples + 5; i++) {
        const run = await asm.post(`/v1/sessions/${idleSession}/runs`, { prompt: 'sleep 60' });
        const ms = await interruptOnce(asm, idleRuns, run.id);
        if (i >= 5) idle.push(ms);
      }
      idleRuns.close();
      // Busy: SLOTS running, the rest waiting; interrupt the oldest running one each time.
      const sessions: string[] = [];
      for (let i = 0; i < samples + SLOTS; i++) sessions.push(await create());
      const busyRuns = watch(asm, sessions);
      await busyRuns.ready;
      const runIds: string[] = [];
      for (const id of sessions) runIds.push((await asm.post(`/v1/sessions/${id}/runs`, { prompt: 'sleep 60' })).id);
      const busy: number[] = [];
      for (let i = 0; i < samples; i++) busy.push(await interruptOnce(asm, busyRuns, runIds[i]!));
      busyRuns.close();
      const bare = await bareKill(samples);
      const result = { idle: summary(idle), busy: summary(busy), bare_kill_exit: summary(bare), target_p99_ms: 20 };
      log(`${mode}: ${JSON.stringify(result)}`);
      return { spawner: asm.spawner, ...result, met_idle: result.idle.p99_ms < 20, met_busy: result.busy.p99_ms < 20 };
    },
    log,
  );
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const samples = numberFlag(args, 'samples', quick ? 20 : 400);
  const workspaceDiffs = args.includes('--diffs') ? 'on' : 'off';
  const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl) => benchMode(mode, redisUrl, samples, workspaceDiffs));
  const line = { bench: 'interrupt', date: new Date().toISOString(), machine, loadavg_after, quick, sandbox: 'none', workspace_diffs: workspaceDiffs, samples, prompt_slots: SLOTS, ...modes };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
