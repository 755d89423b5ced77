/**
 * The request path's CPU (issue 14): µs of the server's CPU (user + system, from /proc) per request
 * of each route of `bench -- http`, at a fixed rate the server keeps up with. Throughput against a
 * bare server is bound by the client on this 2-core machine and swings with it (bench/RESULTS.md);
 * the CPU one request costs does not depend on how fast the client can ask. No baseline runs here:
 * compare two builds by alternating whole runs, one of them with ASM_BENCH_ENTRY (RESULTS.md,
 * "Commands"). Beside the server's CPU, each round reports the part of it spent in garbage collection
 * (the server's own GC histogram on /metrics) and, in Redis mode, redis-server's CPU a request: a
 * Redis-mode request costs the machine both, and the server's collections grow with what it
 * allocates. Prints one JSON line; progress goes to stderr.
 *
 * Usage: npm run bench -- http-cpu [embedded|redis] [--rate N] [--rounds N] [--seconds N] [--profile]
 *   --rate: requests a second, each route (default 2000; a route that cannot keep up runs saturated,
 *   as the Redis events page does); --rounds: per route (5); --seconds: a round (4)
 *   --profile: after the rounds, one more round of each route under the server's CPU profiler
 *   (bench/cpu-profile.ts), whose largest parts and functions the line gives as `profile`; the
 *   profiles are written for Chrome's DevTools to the folder named on stderr
 */
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspectEnv, profile, type ProfileSummary } from './cpu-profile.js';
import { cpuMs, gcMs, inModes, logger, median, numberFlag, redisCpuMs, startAsm, withServers, type Mode } from './asm-server.js';
import { prepare, requestOf, ROUTES, type Route } from './http.js';

const log = logger('http-cpu');
const CONNECTIONS = 50;

async function benchMode(mode: Mode, redisUrl: string | undefined, rate: number, rounds: number, seconds: number, profileDir: string | undefined) {
  const inspectors = profileDir === undefined ? undefined : { asm: await inspectEnv(), runsServer: await inspectEnv() };
  const asm = await startAsm(mode, redisUrl, inspectors?.asm.env);
  const runsServer = await startAsm(mode, redisUrl, inspectors?.runsServer.env);
  const admin = mode === 'redis' ? new Redis(redisUrl!) : undefined;
  try {
    return await withServers(
      [asm, runsServer],
      async () => {
        const { target, runsTarget } = await prepare(asm, runsServer);
        // The submits go to a server of their own (bench/http.ts).
        const side = (route: Route) =>
          route === 'submit_run' ? { server: runsServer, target: runsTarget, inspector: inspectors?.runsServer } : { server: asm, target, inspector: inspectors?.asm };
        const load = (route: Route, duration: number) => autocannon({ ...requestOf(route, side(route).target), connections: CONNECTIONS, duration, overallRate: rate });
        const sample = async (route: Route, duration: number) => {
          const { server } = side(route);
          const pid = server.process.child.pid!;
          // Read outside the CPU window: rendering /metrics is the server's work too.
          const gcBefore = await gcMs(server);
          const redisBefore = admin ? await redisCpuMs(admin) : 0;
          const before = cpuMs(pid);
          const result = await load(route, duration);
          const cpu = cpuMs(pid) - before;
          const redis = admin ? (await redisCpuMs(admin)) - redisBefore : 0;
          const gc = (await gcMs(server)) - gcBefore;
          const perRequest = (ms: number) => Math.round((ms * 1000) / result.requests.total);
          return { cpuUsPerRequest: perRequest(cpu), gcUsPerRequest: perRequest(gc), redisUsPerRequest: perRequest(redis), rps: Math.round(result.requests.average), non2xx: result.non2xx };
        };
        for (const route of ROUTES) await sample(route, 1); // JIT warm-up, unrecorded
        const samples = Object.fromEntries(ROUTES.map((route) => [route, [] as Array<Awaited<ReturnType<typeof sample>>>])) as Record<Route, Array<Awaited<ReturnType<typeof sample>>>>;
        for (let r = 0; r < rounds; r++) {
          for (const route of ROUTES) {
            const s = await sample(route, seconds);
            samples[route].push(s);
            const redis = admin ? `, redis-server ${s.redisUsPerRequest}` : '';
            log(`${mode} round ${r + 1} ${route}: ${s.cpuUsPerRequest} µs a request (GC ${s.gcUsPerRequest}${redis}) at ${s.rps} req/s${s.non2xx ? `, ${s.non2xx} non-2xx` : ''}`);
          }
        }
        // Apart from the measured rounds: the profiler slows the server it samples.
        const profiles: Partial<Record<Route, Omit<ProfileSummary, 'busy_ms'> & { busy_us_per_request: number }>> = {};
        for (const route of inspectors ? ROUTES : []) {
          const file = join(profileDir!, `${mode}-${route}.cpuprofile`);
          const { result, summary } = await profile(side(route).inspector!.port, file, () => load(route, seconds));
          const { busy_ms, ...shares } = summary;
          profiles[route] = { busy_us_per_request: Math.round((busy_ms * 1000) / result.requests.total), ...shares };
          log(`${mode} ${route} profiled: ${file}`);
        }
        return Object.fromEntries(
          ROUTES.map((route) => [
            route,
            {
              cpu_us_per_request: median(samples[route].map((s) => s.cpuUsPerRequest)),
              gc_us_per_request: median(samples[route].map((s) => s.gcUsPerRequest)),
              ...(admin && { redis_server_us_per_request: median(samples[route].map((s) => s.redisUsPerRequest)) }),
              rounds_cpu_us: samples[route].map((s) => s.cpuUsPerRequest),
              rounds_rps: samples[route].map((s) => s.rps),
              non2xx: samples[route].reduce((n, s) => n + s.non2xx, 0),
              ...(profiles[route] && { profile: profiles[route] }),
            },
          ]),
        );
      },
      log,
    );
  } finally {
    admin?.disconnect();
  }
}

export async function run(args: string[]): Promise<void> {
  const rate = numberFlag(args, 'rate', 2000);
  const rounds = numberFlag(args, 'rounds', 5);
  const seconds = numberFlag(args, 'seconds', 4);
  const profileDir = args.includes('--profile') ? mkdtempSync(join(tmpdir(), 'asm-bench-profiles-')) : undefined;
  const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl) => benchMode(mode, redisUrl, rate, rounds, seconds, profileDir));
  const result = { bench: 'http-cpu', date: new Date().toISOString(), machine, loadavg_after, entry: process.env.ASM_BENCH_ENTRY ?? 'this tree', rate, rounds, seconds, ...modes };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
