/**
 * Event-latency benchmark (issue 14): from a line a CLI writes to its stdout to the event in a
 * WebSocket client (GET /v1/events) and an SSE client (GET /v1/runs/{id}/events), both listening at
 * once, in embedded and Redis mode; baseline: a bare Node reader of the same program's stdout pipe.
 * Prints one JSON line; progress goes to stderr.
 *
 * The "CLI" is a shell run of a small Node program that, after a pause (so both clients are live),
 * prints LINES lines every INTERVAL_MS, each the monotonic clock (process.hrtime, CLOCK_MONOTONIC,
 * shared by every process on the machine) at the moment it is written; a client's latency is its own
 * clock when the event arrives minus the line's. The sandbox is off (ASM_SANDBOX=none) so the program
 * can run the service's own node binary. Which client starts following first alternates by round, in
 * an even number of rounds, and both read their socket's `data` events (throughAsm, sse).
 *
 * Beside each client's latencies, `sse_minus_websocket_p50_ms` gives, for the rounds in which each
 * client followed first, the median over the lines of SSE's latency minus the WebSocket's for the same
 * line: the client written second trails the first by the first's write and by this process's handling
 * of the first's bytes, whichever transport it is.
 *
 * Usage: npm run bench -- events [--quick]
 *   --quick: two rounds (one each way round) of 100 lines; the default is four of 1,000
 */
import { spawn } from 'node:child_process';
import { get } from 'node:http';
import { createInterface } from 'node:readline';
import { TERMINAL_KINDS } from '../src/schemas/events.js';
import { AUTH, logger, openEventSocket, percentile, round, startAsm, type AsmServer, type Mode, inModes, withServers } from './asm-server.js';

const log = logger('events');
const INTERVAL_MS = 5;
const PAUSE_MS = 1500;

const emitter = (lines: number) =>
  `setTimeout(() => { let i = 0; const t = setInterval(() => { process.stdout.write(process.hrtime.bigint() + '\\n'); if (++i >= ${lines}) clearInterval(t); }, ${INTERVAL_MS}); }, ${PAUSE_MS});`;

const shellQuote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

function summary(ms: number[]) {
  const sorted = [...ms].sort((a, b) => a - b);
  return { count: sorted.length, p50_ms: round(percentile(sorted, 50), 3), p99_ms: round(percentile(sorted, 99), 3), max_ms: round(sorted.at(-1) ?? NaN, 3) };
}

const lineLatency = (content: string, arrived: bigint) => Number(arrived - BigInt(content.trim())) / 1e6;

/** The same program, its stdout read by Node line by line. */
async function bare(lines: number): Promise<number[]> {
  const child = spawn(process.execPath, ['-e', emitter(lines)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const latencies: number[] = [];
  for await (const line of createInterface({ input: child.stdout! })) latencies.push(lineLatency(line, process.hrtime.bigint()));
  return latencies;
}

/**
 * SSE of one run: each assistant_delta's latency, until the stream ends; `opened` once the stream's
 * first bytes came (the server follows the run from then). Read with node:http, whose socket `data`
 * events are what the `ws` client's frames come from too: fetch's web streams add hops of their own
 * between the socket and the reader, which the WebSocket side does not pay.
 */
function sse(asm: AsmServer, runId: string, into: number[]): { opened: Promise<void>; done: Promise<void> } {
  let opened!: () => void;
  const open = new Promise<void>((resolve) => (opened = resolve));
  const done = new Promise<void>((resolve, reject) => {
    const request = get(`${asm.url}/v1/runs/${runId}/events?after=0`, { headers: { ...AUTH, accept: 'text/event-stream' } }, (response) => {
      response.setEncoding('utf8');
      let buffer = '';
      response.on('data', (chunk: string) => {
        const arrived = process.hrtime.bigint();
        opened();
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (!data) continue;
          const event = JSON.parse(data.slice(6));
          if (event.kind === 'assistant_delta') into.push(lineLatency(event.payload.content, arrived));
        }
      });
      response.on('end', resolve).on('error', reject);
    });
    request.on('error', reject);
  });
  return { opened: open, done };
}

/** A WebSocket of the session, live once subscribed: each assistant_delta's latency; `done` at the run's terminal event. */
async function webSocket(asm: AsmServer, sessionId: string, into: number[]) {
  const socket = openEventSocket(asm, { session_id: sessionId });
  await socket.ready;
  const done = new Promise<void>((resolve) =>
    socket.on((event, arrived) => {
      if (event.kind === 'assistant_delta') into.push(lineLatency(event.payload.content, arrived));
      if (TERMINAL_KINDS.has(event.kind)) resolve();
    }),
  );
  return { done, close: () => socket.close() };
}

/**
 * One run through ASM, both clients live before its first line. The server writes an event to its
 * streams in the order they started following, so which one follows first alternates by round, each
 * first in as many rounds as the other: the one written second takes 51–85 µs more a line (bench/RESULTS.md,
 * issue 14, thirty-first pass), and in three rounds, two of them the WebSocket's, that was SSE's worse max.
 */
async function throughAsm(asm: AsmServer, sessionId: string, lines: number, sseFirst: boolean): Promise<{ ws: number[]; sse: number[] }> {
  const ws: number[] = [];
  const sseLatencies: number[] = [];
  const early = sseFirst ? undefined : await webSocket(asm, sessionId, ws);
  const run = await asm.post(`/v1/sessions/${sessionId}/runs`, { prompt: `${shellQuote(process.execPath)} -e ${shellQuote(emitter(lines))}` });
  const stream = sse(asm, run.id, sseLatencies);
  await stream.opened;
  const socket = early ?? (await webSocket(asm, sessionId, ws));
  await Promise.all([socket.done, stream.done]);
  socket.close();
  if (ws.length !== lines || sseLatencies.length !== lines) throw new Error(`expected ${lines} lines, the WebSocket got ${ws.length}, SSE ${sseLatencies.length}`);
  return { ws, sse: sseLatencies };
}

async function benchMode(mode: Mode, redisUrl: string | undefined, rounds: number, lines: number) {
  const asm = await startAsm(mode, redisUrl, { ASM_SANDBOX: 'none' });
  return withServers(
    [asm],
    async () => {
      const session = (await asm.post('/v1/sessions', { provider: 'shell' })).id;
      const all = { ws: [] as number[], sse: [] as number[], bare: [] as number[] };
      const lag = { websocket_first: [] as number[], sse_first: [] as number[] };
      await throughAsm(asm, session, 50, false);
      await bare(50);
      for (let r = 0; r < rounds; r++) {
        const sseFirst = r % 2 === 1;
        const through = await throughAsm(asm, session, lines, sseFirst);
        const pipe = await bare(lines);
        lag[sseFirst ? 'sse_first' : 'websocket_first'].push(...through.sse.map((latency, line) => latency - through.ws[line]!));
        all.ws.push(...through.ws);
        all.sse.push(...through.sse);
        all.bare.push(...pipe);
        log(`${mode} round ${r + 1}: ws p99 ${round(summary(through.ws).p99_ms, 2)} ms, sse p99 ${round(summary(through.sse).p99_ms, 2)} ms, bare p99 ${round(summary(pipe).p99_ms, 2)} ms`);
      }
      const result = {
        websocket: summary(all.ws),
        sse: summary(all.sse),
        bare_pipe: summary(all.bare),
        sse_minus_websocket_p50_ms: { websocket_first: summary(lag.websocket_first).p50_ms, sse_first: summary(lag.sse_first).p50_ms },
      };
      const target = mode === 'embedded' ? 2 : 10;
      return { spawner: asm.spawner, ...result, target_p99_ms: target, met_websocket: result.websocket.p99_ms < target, met_sse: result.sse.p99_ms < target, sse_max_le_websocket_max: result.sse.max_ms <= result.websocket.max_ms };
    },
    log,
  );
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const rounds = quick ? 2 : 4;
  const lines = quick ? 100 : 1000;
  const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl) => benchMode(mode, redisUrl, rounds, lines));
  process.stdout.write(`${JSON.stringify({ bench: 'events', date: new Date().toISOString(), machine, loadavg_after, quick, sandbox: 'none', interval_ms: INTERVAL_MS, lines_per_round: lines, rounds, ...modes })}\n`);
}
