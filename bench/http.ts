/**
 * Request-path benchmark (issue 14): autocannon against four routes of `asm serve`, each alternated
 * with a bare Fastify server (bench/bare-http-server.ts) answering JSON of the same size, in embedded
 * and in Redis mode. Prints one JSON line; progress goes to stderr.
 *
 * - `POST /v1/sessions` of a shell session;
 * - `GET /v1/runs/{id}` of a finished run;
 * - `GET /v1/runs/{id}/events?after=0` of a run with 100 events (one page);
 * - `POST /v1/sessions/{id}/runs` of `true`, without waiting, while the runs' lane is paused (so the
 *   request path is measured, not the spawn), spread over 64 sessions of 64 concurrent runs each.
 *   On a server of its own: the runs it leaves queued (tens of thousands) would otherwise weigh on
 *   the other routes' later rounds (in Redis mode they did, 3–10× by the third round).
 *
 * Usage: npm run bench -- http [--quick] [--no-access-log]
 *   --quick: one round of 2 s per route and side
 *   --no-access-log: ASM with ASM_ACCESS_LOG=off (the default writes one line per request)
 */
import autocannon from 'autocannon';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AUTH, logger, median, round, startAsm, startBaseline, type AsmServer, type Mode, inModes, withServers } from './asm-server.js';

const log = logger('http');
const CONNECTIONS = 50;
const RUN_SESSIONS = 64;
const EVENTS = 100;
export const ROUTES = ['create_session', 'get_run', 'get_events', 'submit_run'] as const;
export type Route = (typeof ROUTES)[number];

export interface Sample {
  rps: number;
  p99_ms: number;
  non2xx: number;
  errors: number;
}

export interface Target {
  url: string;
  /** Session ids for submit_run. */
  sessions: string[];
  runId: string;
  eventsRunId: string;
}

export function requestOf(route: Route, target: Target): autocannon.Options {
  const json = { ...AUTH, 'content-type': 'application/json' };
  switch (route) {
    case 'create_session':
      return { url: `${target.url}/v1/sessions`, method: 'POST', headers: json, body: JSON.stringify({ provider: 'shell' }) };
    case 'get_run':
      return { url: `${target.url}/v1/runs/${target.runId}`, headers: AUTH };
    case 'get_events':
      return { url: `${target.url}/v1/runs/${target.eventsRunId}/events?after=0`, headers: AUTH };
    case 'submit_run': {
      let next = 0;
      const body = JSON.stringify({ prompt: 'true' });
      return {
        url: target.url,
        requests: [{ method: 'POST', headers: json, body, setupRequest: (req) => ({ ...req, path: `/v1/sessions/${target.sessions[next++ % target.sessions.length]}/runs` }) }],
      };
    }
  }
}

export async function measure(route: Route, target: Target, seconds: number): Promise<Sample> {
  const result = await autocannon({ ...requestOf(route, target), connections: CONNECTIONS, duration: seconds });
  return { rps: Math.round(result.requests.average), p99_ms: result.latency.p99, non2xx: result.non2xx, errors: result.errors };
}

/** The bodies ASM answers, for the bare server to answer the same bytes' worth; and ASM's ids. */
export async function prepare(asm: AsmServer, runsServer: AsmServer): Promise<{ target: Target; runsTarget: Target; bodies: Record<string, unknown> }> {
  const session = await asm.post('/v1/sessions', { provider: 'shell' });
  const run = await asm.post(`/v1/sessions/${session.id}/runs`, { prompt: 'true', wait: true });
  // A shell run's events: run_queued, run_started, one per stdout line, the result, run_completed; count and top up to EVENTS.
  let lines = EVENTS - 4;
  let eventsRun: any;
  let events: any;
  for (let attempt = 0; attempt < 3; attempt++) {
    eventsRun = await asm.post(`/v1/sessions/${session.id}/runs`, { prompt: `seq 1 ${lines}`, wait: true });
    events = await asm.get(`/v1/runs/${eventsRun.id}/events?after=0`);
    if (events.events.length === EVENTS) break;
    lines += EVENTS - events.events.length;
  }
  if (events.events.length !== EVENTS) throw new Error(`the events run has ${events.events.length} events, not ${EVENTS}`);
  const sessions: string[] = [];
  for (let i = 0; i < RUN_SESSIONS; i++) sessions.push((await runsServer.post('/v1/sessions', { provider: 'shell', max_concurrent_runs: 64, max_queued_runs: 10_000 })).id);
  await runsServer.post(`/v1/queues/${session.queue}/pause`, {});
  const queued = await runsServer.post(`/v1/sessions/${sessions[0]}/runs`, { prompt: 'true' });
  const target = { url: asm.url, sessions, runId: run.id, eventsRunId: eventsRun.id };
  return { target, runsTarget: { ...target, url: runsServer.url }, bodies: { session, run, events, queued } };
}

function startBare(bodies: Record<string, unknown>, dir: string) {
  const file = join(dir, `bodies-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(bodies));
  return startBaseline('./bare-http-server.ts', [file]);
}

async function benchMode(mode: Mode, redisUrl: string | undefined, rounds: number, seconds: number, dir: string, accessLog: 'on' | 'off') {
  const env = { ASM_ACCESS_LOG: accessLog };
  const asm = await startAsm(mode, redisUrl, env);
  const runsServer = await startAsm(mode, redisUrl, env);
  return withServers(
    [asm, runsServer],
    async () => {
      const { target, runsTarget, bodies } = await prepare(asm, runsServer);
      const asmTarget = (route: Route) => (route === 'submit_run' ? runsTarget : target);
      const bare = await startBare(bodies, dir);
      const bareTarget: Target = { ...target, url: bare.url };
      try {
        const samples = Object.fromEntries(ROUTES.map((r) => [r, { asm: [] as Sample[], bare: [] as Sample[] }])) as Record<Route, { asm: Sample[]; bare: Sample[] }>;
        // Warm both servers' JIT on every route before measuring.
        for (const route of ROUTES) {
          await measure(route, bareTarget, 1);
          await measure(route, asmTarget(route), 1);
        }
        for (let r = 0; r < rounds; r++) {
          for (const route of ROUTES) {
            // Alternate which side goes first, so drift on a shared machine falls on both.
            const order: Array<'asm' | 'bare'> = r % 2 === 0 ? ['bare', 'asm'] : ['asm', 'bare'];
            for (const side of order) {
              const sample = await measure(route, side === 'asm' ? asmTarget(route) : bareTarget, seconds);
              samples[route][side].push(sample);
              log(`${mode} round ${r + 1} ${route} ${side}: ${sample.rps} req/s, p99 ${sample.p99_ms} ms${sample.non2xx ? `, ${sample.non2xx} non-2xx` : ''}`);
            }
          }
        }
        const target_ratio = mode === 'embedded' ? 0.5 : 0.25;
        return Object.fromEntries(
          ROUTES.map((route) => {
            const asmRps = median(samples[route].asm.map((s) => s.rps));
            const bareRps = median(samples[route].bare.map((s) => s.rps));
            const ratio = round(asmRps / bareRps, 2);
            return [
              route,
              {
                asm_rps: asmRps,
                asm_p99_ms: median(samples[route].asm.map((s) => s.p99_ms)),
                bare_rps: bareRps,
                bare_p99_ms: median(samples[route].bare.map((s) => s.p99_ms)),
                ratio,
                target_ratio,
                met: ratio >= target_ratio,
                asm_rounds_rps: samples[route].asm.map((s) => s.rps),
                bare_rounds_rps: samples[route].bare.map((s) => s.rps),
                asm_non2xx: samples[route].asm.reduce((n, s) => n + s.non2xx + s.errors, 0),
              },
            ];
          }),
        );
      } finally {
        bare.stop();
      }
    },
    log,
  );
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const rounds = quick ? 1 : 3;
  const seconds = quick ? 2 : 4;
  const accessLog = args.includes('--no-access-log') ? 'off' : 'on';
  const dir = mkdtempSync(join(tmpdir(), 'asm-bench-http-'));
  try {
    const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl) => benchMode(mode, redisUrl, rounds, seconds, dir, accessLog));
    const result = { bench: 'http', date: new Date().toISOString(), machine, loadavg_after, quick, access_log: accessLog, connections: CONNECTIONS, rounds, seconds, ...modes };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
