/**
 * The request path's CPU (issue 14): µs of the server's CPU (user + system, from /proc) per request
 * of each route of `bench -- http`, at a fixed rate the server keeps up with. Throughput against a
 * bare server is bound by the client on this 2-core machine and swings with it (bench/RESULTS.md);
 * the CPU one request costs does not depend on how fast the client can ask. No baseline runs here:
 * compare two builds by alternating whole runs, one of them with ASM_BENCH_ENTRY (RESULTS.md,
 * "Commands"). Prints one JSON line; progress goes to stderr.
 *
 * Usage: npm run bench -- http-cpu [embedded|redis] [--rate N] [--rounds N] [--seconds N]
 *   --rate: requests a second, each route (default 2000; a route that cannot keep up runs saturated,
 *   as the Redis events page does); --rounds: per route (5); --seconds: a round (4)
 */
import autocannon from 'autocannon';
import { cpuMs, inModes, logger, median, numberFlag, startAsm, withServers, type AsmServer, type Mode } from './asm-server.js';
import { prepare, requestOf, ROUTES, type Route } from './http.js';

const log = logger('http-cpu');
const CONNECTIONS = 50;

async function benchMode(mode: Mode, redisUrl: string | undefined, rate: number, rounds: number, seconds: number) {
  const asm = await startAsm(mode, redisUrl);
  const runsServer = await startAsm(mode, redisUrl);
  return withServers(
    [asm, runsServer],
    async () => {
      const { target, runsTarget } = await prepare(asm, runsServer);
      const serverOf = (route: Route): AsmServer => (route === 'submit_run' ? runsServer : asm);
      const sample = async (route: Route, duration: number) => {
        const pid = serverOf(route).process.child.pid!;
        const before = cpuMs(pid);
        const result = await autocannon({ ...requestOf(route, route === 'submit_run' ? runsTarget : target), connections: CONNECTIONS, duration, overallRate: rate });
        return { cpuUsPerRequest: Math.round(((cpuMs(pid) - before) * 1000) / result.requests.total), rps: Math.round(result.requests.average), non2xx: result.non2xx };
      };
      for (const route of ROUTES) await sample(route, 1); // JIT warm-up, unrecorded
      const samples = Object.fromEntries(ROUTES.map((route) => [route, [] as Array<Awaited<ReturnType<typeof sample>>>])) as Record<Route, Array<Awaited<ReturnType<typeof sample>>>>;
      for (let r = 0; r < rounds; r++) {
        for (const route of ROUTES) {
          const s = await sample(route, seconds);
          samples[route].push(s);
          log(`${mode} round ${r + 1} ${route}: ${s.cpuUsPerRequest} µs a request at ${s.rps} req/s${s.non2xx ? `, ${s.non2xx} non-2xx` : ''}`);
        }
      }
      return Object.fromEntries(
        ROUTES.map((route) => [
          route,
          {
            cpu_us_per_request: median(samples[route].map((s) => s.cpuUsPerRequest)),
            rounds_cpu_us: samples[route].map((s) => s.cpuUsPerRequest),
            rounds_rps: samples[route].map((s) => s.rps),
            non2xx: samples[route].reduce((n, s) => n + s.non2xx, 0),
          },
        ]),
      );
    },
    log,
  );
}

export async function run(args: string[]): Promise<void> {
  const rate = numberFlag(args, 'rate', 2000);
  const rounds = numberFlag(args, 'rounds', 5);
  const seconds = numberFlag(args, 'seconds', 4);
  const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl) => benchMode(mode, redisUrl, rate, rounds, seconds));
  const result = { bench: 'http-cpu', date: new Date().toISOString(), machine, loadavg_after, entry: process.env.ASM_BENCH_ENTRY ?? 'this tree', rate, rounds, seconds, ...modes };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
