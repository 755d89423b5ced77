/**
 * Run-path benchmark (issue 14): a no-op shell run (`true`, `wait: true`) through `asm serve`
 * against a bare `sh -c true` spawned and awaited by Node, in the same run, embedded and in Redis
 * mode. Prints one JSON line; progress goes to stderr.
 *
 * - latency: p50/p99 of one run after another from one session, alternated with the bare spawn, and
 *   the CPU a run costs the server against what a bare spawn costs its caller (neither counts the child);
 *   with what the same runs cost the bench's own process (their HTTP client) and, in Redis mode,
 *   redis-server: the three share the machine's cores, so their sum says whether one session's runs
 *   are bound by the host's CPU or by the chain of steps a run waits on;
 * - throughput: runs/s from 1, 4 and 16 sessions (each submitting one run after another), against
 *   1, 4 and 16 loops of bare spawns;
 * - all of it after 2,500 runs of warm-up (`warm_up`: the server's CPU a run over the first 250 and
 *   the last 250 of them), since a new server's runs cost more until V8 has optimised their code;
 * - flat history: `--history N` runs (10,000 by default) one after another in one session; the runs
 *   completed in the first and in the last second, and their ratio (target ≥ 0.9). Then, as a control
 *   for the host's drift between those two seconds, runs of that session alternated with runs of a new
 *   one (`against_new_session`: the new one's p50 over the old one's; 1 when history costs nothing).
 *
 * The sandbox is off (ASM_SANDBOX=none): it adds a fixed ~9 ms per run (bench -- sandbox), which would
 * hide what this measures. So are the workspace diffs (ASM_WORKSPACE_DIFFS=off) unless `--diffs`: a
 * run that changes nothing still costs a `git add` at its start and its end (bench -- diff), each a
 * process of its own, as large as the spawn measured. The shell's lane is raised to 16 slots so 16
 * sessions run at once.
 *
 * The server starts its children with posix_spawn (native/spawn.c) unless ASM_SPAWNER=fork is set for
 * the bench (each mode's `spawner`, as the server reports it), as the bare side does with Node's child_process.
 *
 * Usage: npm run bench -- runs [--quick] [--history N] [--diffs] [embedded|redis]
 */
import { Redis } from 'ioredis';
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { cpuMs, logger, median, numberFlag, percentile, redisCpuMs, round, startAsm, type AsmServer, type Mode, inModes, withServers } from './asm-server.js';

const log = logger('runs');
const CONCURRENCY = [1, 4, 16];

function bareSpawn(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'true'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`sh exited ${code}`))));
  });
}

async function asmRun(asm: AsmServer, sessionId: string): Promise<void> {
  const run = await asm.post(`/v1/sessions/${sessionId}/runs`, { prompt: 'true', wait: true });
  if (run.state !== 'completed') throw new Error(`run ${run.id} ended ${run.state}: ${JSON.stringify(run.result?.error)}`);
}

async function latencies(once: () => Promise<void>, count: number): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await once();
    samples.push(performance.now() - started);
  }
  return samples.sort((a, b) => a - b);
}

const WARM_UP_RUNS = 2_500;
const WARM_UP_BLOCK = 250;

/** WARM_UP_RUNS runs one after another: the server's CPU a run over the first and the last WARM_UP_BLOCK of them. */
async function warmUpCost(asm: AsmServer, sessionId: string) {
  const once = () => asmRun(asm, sessionId);
  const blockCpu = async () => {
    const before = cpuMs(asm.process.child.pid!);
    await latencies(once, WARM_UP_BLOCK);
    return round((cpuMs(asm.process.child.pid!) - before) / WARM_UP_BLOCK, 2);
  };
  const first = await blockCpu();
  await latencies(once, WARM_UP_RUNS - 2 * WARM_UP_BLOCK);
  return { runs: WARM_UP_RUNS, asm_server_cpu_ms_per_run_first: first, asm_server_cpu_ms_per_run_last: await blockCpu() };
}

/** Runs/s of `loops` loops each calling its `once` for `seconds`. */
async function throughput(onces: Array<() => Promise<void>>, seconds: number): Promise<number> {
  let done = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    onces.map(async (once) => {
      while (performance.now() < until) {
        await once();
        done++;
      }
    }),
  );
  return done / ((performance.now() - started) / 1000);
}

async function benchMode(mode: Mode, redisUrl: string | undefined, opts: { rounds: number; samples: number; seconds: number; history: number; workspace_diffs: 'on' | 'off' }) {
  const lanes = JSON.stringify([{ id: 'skill', priority: 4, minConcurrency: 1, maxConcurrency: 16 }]);
  const asm = await startAsm(mode, redisUrl, { ASM_SANDBOX: 'none', ASM_WORKSPACE_DIFFS: opts.workspace_diffs, ASM_LANES: lanes, ASM_LOG_LEVEL: 'info' });
  // In Redis mode, redis-server's CPU, read through a connection of the bench's own (INFO).
  const redisAdmin = mode === 'redis' ? new Redis(redisUrl!) : undefined;
  return withServers(
    [asm],
    async () => {
      const sessions: string[] = [];
      for (let i = 0; i < 16; i++) sessions.push((await asm.post('/v1/sessions', { provider: 'shell' })).id);
      // Warm-up of both sides (JIT, the lane's first jobs). A new server's runs cost it more CPU until
      // V8 has optimised the code a run goes through, which takes it about 2,000 runs (bench/RESULTS.md,
      // issue 14, thirty-first pass): the figures below are a warm server's, and `warm_up` says what
      // its first runs and its last ones cost.
      await latencies(bareSpawn, 50);
      const warmUp = await warmUpCost(asm, sessions[0]!);
      const latency = { asm_p50: [] as number[], asm_p99: [] as number[], bare_p50: [] as number[], bare_p99: [] as number[] };
      // CPU a run costs: the ASM server's (its own threads, from /proc), against what the bare spawn
      // costs its caller, this process (process.cpuUsage); neither counts the child's.
      const cpu = { asm: [] as number[], bare: [] as number[], asmClient: [] as number[], asmRedis: [] as number[] };
      const ownCpuMs = () => {
        const used = process.cpuUsage();
        return (used.user + used.system) / 1000;
      };
      const cpuSoFar = { asm: () => cpuMs(asm.process.child.pid!), bare: ownCpuMs };
      // What the ASM side's runs cost besides the server: this process (their HTTP client) and, in Redis mode, redis-server.
      const othersSoFar = async () => ({ client: ownCpuMs(), redis: redisAdmin ? await redisCpuMs(redisAdmin) : 0 });
      const rates: Record<string, { asm: number[]; bare: number[] }> = Object.fromEntries(CONCURRENCY.map((c) => [String(c), { asm: [], bare: [] }]));
      for (let r = 0; r < opts.rounds; r++) {
        const order = r % 2 === 0 ? (['bare', 'asm'] as const) : (['asm', 'bare'] as const);
        for (const side of order) {
          const othersBefore = side === 'asm' ? await othersSoFar() : undefined;
          const cpuBefore = cpuSoFar[side]();
          const samples = side === 'asm' ? await latencies(() => asmRun(asm, sessions[0]!), opts.samples) : await latencies(bareSpawn, opts.samples);
          const usedMs = cpuSoFar[side]() - cpuBefore;
          if (othersBefore) {
            const othersAfter = await othersSoFar();
            cpu.asmClient.push((othersAfter.client - othersBefore.client) / opts.samples);
            cpu.asmRedis.push((othersAfter.redis - othersBefore.redis) / opts.samples);
          }
          latency[`${side}_p50`].push(percentile(samples, 50));
          latency[`${side}_p99`].push(percentile(samples, 99));
          cpu[side].push(usedMs / opts.samples);
          log(`${mode} round ${r + 1} latency ${side}: p50 ${round(percentile(samples, 50), 2)} ms, ${round(usedMs / opts.samples, 2)} ms CPU a run`);
        }
        for (const c of CONCURRENCY) {
          for (const side of order) {
            const onces = side === 'asm' ? sessions.slice(0, c).map((id) => () => asmRun(asm, id)) : Array.from({ length: c }, () => bareSpawn);
            rates[String(c)]![side].push(round(await throughput(onces, opts.seconds)));
            log(`${mode} round ${r + 1} ${c} at once ${side}: ${rates[String(c)]![side].at(-1)} runs/s`);
          }
        }
      }
      // One session, `history` runs one after another: completions per second, first against last.
      const session = (await asm.post('/v1/sessions', { provider: 'shell' })).id;
      const completions: number[] = [];
      const durations: number[] = [];
      const started = performance.now();
      for (let i = 0; i < opts.history; i++) {
        const runStarted = performance.now();
        await asmRun(asm, session);
        durations.push(performance.now() - runStarted);
        completions.push(performance.now() - started);
        if ((i + 1) % 1000 === 0) log(`${mode} history: ${i + 1} runs in ${round(completions.at(-1)! / 1000)} s`);
      }
      // A control for the host's drift over the history's minutes: runs of the old session alternated
      // with runs of a new one, at the same moments. Equal when only the session's history could
      // differ; the first and the last second are minutes apart, on hosts whose speed drifted by a
      // third from one minute to the next (bench/RESULTS.md, twenty-second pass).
      const fresh = (await asm.post('/v1/sessions', { provider: 'shell' })).id;
      for (let i = 0; i < 20; i++) await asmRun(asm, fresh);
      const alternated = { old: [] as number[], fresh: [] as number[] };
      const pair = [['old', session], ['fresh', fresh]] as const;
      const reversed = [...pair].reverse();
      for (let i = 0; i < opts.samples; i++) {
        for (const [side, id] of i % 2 === 0 ? pair : reversed) {
          const runStarted = performance.now();
          await asmRun(asm, id);
          alternated[side].push(performance.now() - runStarted);
        }
      }
      const total = completions.at(-1)!;
      const firstSecond = completions.filter((t) => t <= 1000).length;
      const lastSecond = completions.filter((t) => t > total - 1000).length;
      const p50 = (values: number[]) => round(median(values), 2);
      // Less noisy than a second's count on a shared machine: the median run of the first and the last tenth.
      const tenth = Math.max(1, Math.floor(opts.history / 10));
      const firstTenth = p50(durations.slice(0, tenth));
      const lastTenth = p50(durations.slice(-tenth));
      return {
        spawner: asm.spawner,
        latency_ms: {
          asm_p50: p50(latency.asm_p50),
          asm_p99: p50(latency.asm_p99),
          bare_p50: p50(latency.bare_p50),
          bare_p99: p50(latency.bare_p99),
          ratio_p50: round(median(latency.asm_p50) / median(latency.bare_p50), 2),
        },
        cpu_ms_per_run: {
          asm_server: p50(cpu.asm),
          bare_caller: p50(cpu.bare),
          asm_bench_client: p50(cpu.asmClient),
          ...(redisAdmin && { asm_redis_server: p50(cpu.asmRedis) }),
        },
        warm_up: warmUp,
        runs_per_s: Object.fromEntries(
          CONCURRENCY.map((c) => {
            const { asm: a, bare: b } = rates[String(c)]!;
            return [`sessions_${c}`, { asm: median(a), bare: median(b), ratio: round(median(a) / median(b), 2), asm_rounds: a, bare_rounds: b }];
          }),
        ),
        history: {
          runs: opts.history,
          seconds: round(total / 1000),
          first_second: firstSecond,
          last_second: lastSecond,
          ratio: round(lastSecond / firstSecond, 2),
          p50_ms_first_tenth: firstTenth,
          p50_ms_last_tenth: lastTenth,
          against_new_session: { samples: opts.samples, p50_ms_old: p50(alternated.old), p50_ms_new: p50(alternated.fresh), ratio: round(median(alternated.fresh) / median(alternated.old), 2) },
        },
      };
    },
    log,
  ).finally(() => redisAdmin?.disconnect());
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const history = numberFlag(args, 'history', quick ? 1000 : 10_000);
  const opts = { rounds: quick ? 1 : 3, samples: quick ? 100 : 300, seconds: quick ? 2 : 4, history, workspace_diffs: args.includes('--diffs') ? ('on' as const) : ('off' as const) };
  const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl): Promise<any> => benchMode(mode, redisUrl, opts));
  const targets: Record<string, unknown> = {};
  if (modes.embedded) {
    targets.embedded_latency_le_1_3x_bare = modes.embedded.latency_ms.ratio_p50 <= 1.3;
    targets.embedded_throughput_ge_0_8x_bare = CONCURRENCY.every((c) => modes.embedded.runs_per_s[`sessions_${c}`].ratio >= 0.8);
    targets.embedded_history_flat = modes.embedded.history.ratio >= 0.9;
  }
  if (modes.redis) {
    targets.redis_history_flat = modes.redis.history.ratio >= 0.9;
    if (modes.embedded) {
      targets.redis_ge_0_5x_embedded = CONCURRENCY.every((c) => modes.redis.runs_per_s[`sessions_${c}`].asm >= 0.5 * modes.embedded.runs_per_s[`sessions_${c}`].asm);
    }
  }
  const result = { bench: 'runs', date: new Date().toISOString(), machine, loadavg_after, quick, sandbox: 'none', ...opts, ...modes, targets };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
