/**
 * What metrics and traces cost on the request path (issue 12): `asm serve` (embedded) with metrics and
 * tracing off, with metrics on (the default), and with metrics and OTLP tracing on (every request
 * sampled, spans exported over OTLP/HTTP to a sink in this process that answers 200), alternated
 * round by round on three routes under autocannon. Prints one JSON line; progress goes to stderr.
 *
 * Usage: npm run bench -- observability [--quick]
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { logger, machine, median, round, startAsm, type AsmServer } from './asm-server.js';
import { measure, type Route, type Sample, type Target } from './http.js';

const log = logger('observability');
const ROUTES: Route[] = ['create_session', 'get_run', 'get_events'];
const SETTINGS = ['off', 'metrics', 'metrics_traces'] as const;
type Setting = (typeof SETTINGS)[number];

/** An OTLP/HTTP receiver that accepts and counts what it is sent, so exporting costs what it would against a collector on loopback. */
async function startSpanSink() {
  let requests = 0;
  let bytes = 0;
  const server = createServer((req, res) => {
    requests++;
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, stats: () => ({ requests, bytes }), close: () => new Promise((resolve) => server.close(resolve)) };
}

async function targetOf(asm: AsmServer): Promise<Target> {
  const session = await asm.post('/v1/sessions', { provider: 'shell' });
  const run = await asm.post(`/v1/sessions/${session.id}/runs`, { prompt: 'true', wait: true });
  const eventsRun = await asm.post(`/v1/sessions/${session.id}/runs`, { prompt: 'seq 1 96', wait: true });
  return { url: asm.url, sessions: [session.id], runId: run.id, eventsRunId: eventsRun.id };
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const rounds = quick ? 1 : 3;
  const seconds = quick ? 2 : 4;
  const sink = await startSpanSink();
  const env: Record<Setting, Record<string, string>> = {
    off: { ASM_METRICS: 'off' },
    metrics: {},
    metrics_traces: { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${sink.url}/v1/traces`, OTEL_TRACES_SAMPLER: 'always_on' },
  };
  const servers = {} as Record<Setting, AsmServer>;
  try {
    for (const setting of SETTINGS) servers[setting] = await startAsm('embedded', undefined, env[setting]);
    const targets = {} as Record<Setting, Target>;
    for (const setting of SETTINGS) targets[setting] = await targetOf(servers[setting]);
    const before = machine();
    for (const route of ROUTES) for (const setting of SETTINGS) await measure(route, targets[setting], 1);
    const samples = Object.fromEntries(ROUTES.map((r) => [r, Object.fromEntries(SETTINGS.map((s) => [s, [] as Sample[]]))])) as Record<Route, Record<Setting, Sample[]>>;
    for (let r = 0; r < rounds; r++) {
      for (const route of ROUTES) {
        // Rotate which setting goes first, so drift on a shared machine falls on all three.
        const order = SETTINGS.map((_, i) => SETTINGS[(i + r) % SETTINGS.length]!);
        for (const setting of order) {
          const sample = await measure(route, targets[setting], seconds);
          samples[route][setting].push(sample);
          log(`round ${r + 1} ${route} ${setting}: ${sample.rps} req/s, p99 ${sample.p99_ms} ms`);
        }
      }
    }
    const routes = Object.fromEntries(
      ROUTES.map((route) => {
        const rps = Object.fromEntries(SETTINGS.map((s) => [s, median(samples[route][s].map((x) => x.rps))])) as Record<Setting, number>;
        const p99 = Object.fromEntries(SETTINGS.map((s) => [s, median(samples[route][s].map((x) => x.p99_ms))]));
        return [route, { rps, p99_ms: p99, metrics_ratio: round(rps.metrics / rps.off, 2), metrics_traces_ratio: round(rps.metrics_traces / rps.off, 2) }];
      }),
    );
    const result = { bench: 'observability', date: new Date().toISOString(), machine: before, loadavg_after: machine().loadavg, quick, rounds, seconds, mode: 'embedded', routes, spans_exported: sink.stats() };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    for (const setting of SETTINGS) await servers[setting]?.stop();
    await sink.close();
  }
}
