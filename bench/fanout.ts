/**
 * Fan-out benchmark (issue 14): the server's CPU per event while N clients follow one session's
 * events, against a bare broadcaster (bench/bare-stream-server.ts) sending every client each event of
 * a burst of the same size, serialised once per event. ASM's events come from a shell run printing
 * `--lines` lines; the bare server sends as many copies of one of those events. Rounds alternate
 * between the two; CPU comes from /proc (user and system, all threads). Embedded and Redis mode.
 * Prints one JSON line; progress goes to stderr.
 *
 * `--transport ws` (the default): WebSocket clients of the session (GET /v1/events), connected once.
 * `--transport sse`: SSE clients of each round's run (GET /v1/runs/{id}/events), which end with it.
 * They connect while the run waits on a FIFO the bench then opens, so the events they count are
 * live ones, and the server's CPU is counted from then: their connections are not in it, on either
 * side. The sandbox is off (ASM_SANDBOX=none) so the run can read the bench's FIFO.
 *
 * Usage: npm run bench -- fanout [embedded|redis] [--transport ws|sse] [--subscribers N] [--lines N] [--rounds N]
 *   defaults: ws, 100 subscribers, 1000 lines, 3 rounds
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { TERMINAL_KINDS } from '../src/schemas/events.js';
import { waitFor } from '../test/helpers/wait.js';
import { AUTH, cpuMs, inModes, logger, median, numberFlag, round, startAsm, startBaseline, withServers, type AsmServer, type Mode } from './asm-server.js';

const log = logger('fanout');
type Transport = 'ws' | 'sse';

/** N WebSocket clients of one event stream; `received` counts each client's event frames, `last` keeps one event. */
async function webSocketFollowers(url: string, n: number, headers: Record<string, string>, ready: 'open' | 'subscribed') {
  const received: number[] = new Array(n).fill(0);
  const state = { ended: 0, last: undefined as Record<string, unknown> | undefined };
  const sockets = await Promise.all(
    received.map(
      (_, i) =>
        new Promise<WebSocket>((resolve, reject) => {
          const socket = new WebSocket(url, { headers });
          socket.once('error', reject);
          if (ready === 'open') socket.once('open', () => resolve(socket));
          socket.on('message', (data) => {
            const frame = JSON.parse(String(data));
            if (frame.type === 'subscribed') return resolve(socket);
            if (frame.type !== 'event') return;
            received[i]++;
            if (i === 0) state.last = frame.event;
            if (TERMINAL_KINDS.has(frame.event.kind)) state.ended++;
          });
        }),
    ),
  );
  const total = () => received.reduce((sum, count) => sum + count, 0);
  return { received, state, total, close: () => sockets.forEach((socket) => socket.close()) };
}

/**
 * N SSE clients of `url`, each open once its first block (the `: stream open` comment) came; `total`
 * counts the messages they got, `ended` the streams that ended.
 */
async function sseFollowers(url: string, n: number, headers: Record<string, string>) {
  let total = 0;
  let ended = 0;
  await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<void>((open, reject) => {
          const request = get(url, { headers: { ...headers, accept: 'text/event-stream' } }, (response) => {
            if (response.statusCode !== 200) return reject(new Error(`GET ${url}: ${response.statusCode}`));
            response.setEncoding('utf8');
            let tail = '';
            response.on('data', (chunk: string) => {
              // A message is a block that ends with a blank line and has a data: line; the rest are comments.
              const blocks = (tail + chunk).split('\n\n');
              tail = blocks.pop()!;
              for (const block of blocks) if (block.includes('\ndata: ') || block.startsWith('data: ')) total++;
              open();
            });
            response.once('end', () => ended++);
          });
          request.once('error', reject);
        }),
    ),
  );
  return { total: () => total, ended: () => ended };
}

/** How long a round may take to reach every client before the bench fails rather than hangs. */
const ROUND_TIMEOUT_MS = 120_000;

/** One round on each side: µs of server CPU per event, and (ASM) the events each client got and one line's event. */
interface Sides {
  asmRound(): Promise<{ cpuUs: number; events: number; last?: Record<string, unknown> }>;
  bareRound(events: number, event: Record<string, unknown>): Promise<number>;
  close(): void;
}

async function webSocketSides(asm: AsmServer, bare: Baseline, subscribers: number, lines: number): Promise<Sides> {
  const session = (await asm.post('/v1/sessions', { provider: 'shell' })).id;
  const ours = await webSocketFollowers(`${asm.url.replace('http', 'ws')}/v1/events?session_id=${session}`, subscribers, AUTH, 'subscribed');
  const theirs = await webSocketFollowers(`${bare.url.replace('http', 'ws')}/v1/events`, subscribers, {}, 'open');
  return {
    async asmRound() {
      const [before, frames, ended] = [cpuMs(asm.process.child.pid!), ours.total(), ours.state.ended];
      await asm.post(`/v1/sessions/${session}/runs`, { prompt: `seq 1 ${lines}` });
      await waitFor(() => ours.state.ended - ended === subscribers, `the run's end at all ${subscribers} ASM clients`, ROUND_TIMEOUT_MS);
      const events = (ours.total() - frames) / subscribers;
      return { cpuUs: ((cpuMs(asm.process.child.pid!) - before) * 1000) / events, events, last: ours.state.last };
    },
    async bareRound(events, event) {
      const [before, frames] = [cpuMs(bare.pid), theirs.total()];
      await fetch(`${bare.url}/emit`, { method: 'POST', body: JSON.stringify({ count: events, event }) });
      await waitFor(() => theirs.total() - frames === events * subscribers, `the burst at all ${subscribers} bare clients`, ROUND_TIMEOUT_MS);
      return ((cpuMs(bare.pid) - before) * 1000) / events;
    },
    close() {
      ours.close();
      theirs.close();
    },
  };
}

async function sseSides(asm: AsmServer, bare: Baseline, subscribers: number, lines: number): Promise<Sides> {
  const session = (await asm.post('/v1/sessions', { provider: 'shell' })).id;
  const dir = mkdtempSync(join(tmpdir(), 'asm-fanout-'));
  let rounds = 0;
  return {
    async asmRound() {
      const gate = join(dir, `gate-${rounds++}`);
      execFileSync('mkfifo', [gate]);
      const run = await asm.post(`/v1/sessions/${session}/runs`, { prompt: `cat ${gate} > /dev/null; seq 1 ${lines}` });
      const ours = await sseFollowers(`${asm.url}/v1/runs/${run.id}/events?after=0`, subscribers, AUTH);
      // Counted from when every client has the run's run_queued and run_started, as the bare clients start from nothing.
      await waitFor(() => ours.total() === 2 * subscribers, `run_queued and run_started at all ${subscribers} ASM clients`, ROUND_TIMEOUT_MS);
      const [before, messages] = [cpuMs(asm.process.child.pid!), ours.total()];
      await writeFile(gate, ''); // opens the FIFO for writing and closes it: the run's `cat` ends, and its lines follow
      await waitFor(() => ours.ended() === subscribers, `the run's end at all ${subscribers} ASM clients`, ROUND_TIMEOUT_MS);
      const [usedMs, events] = [cpuMs(asm.process.child.pid!) - before, (ours.total() - messages) / subscribers];
      // Read after the CPU is: this request is the bench's, not the fan-out's.
      const last = (await asm.get(`/v1/runs/${run.id}/events?after=0`)).events.find((e: { kind: string }) => e.kind === 'assistant_delta');
      return { cpuUs: (usedMs * 1000) / events, events, last };
    },
    async bareRound(events, event) {
      const theirs = await sseFollowers(`${bare.url}/v1/sse`, subscribers, {});
      const before = cpuMs(bare.pid);
      await fetch(`${bare.url}/emit`, { method: 'POST', body: JSON.stringify({ count: events, event }) });
      await waitFor(() => theirs.ended() === subscribers, `the burst at all ${subscribers} bare clients`, ROUND_TIMEOUT_MS);
      if (theirs.total() !== events * subscribers) throw new Error(`the bare clients got ${theirs.total()} messages, not ${events * subscribers}`);
      return ((cpuMs(bare.pid) - before) * 1000) / events;
    },
    close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Baseline = Awaited<ReturnType<typeof startBaseline>>;

async function benchMode(mode: Mode, redisUrl: string | undefined, transport: Transport, subscribers: number, lines: number, rounds: number) {
  const asm = await startAsm(mode, redisUrl, transport === 'sse' ? { ASM_SANDBOX: 'none' } : {});
  return withServers(
    [asm],
    async () => {
      const bare = await startBaseline('./bare-stream-server.ts');
      const sides = await (transport === 'ws' ? webSocketSides : sseSides)(asm, bare, subscribers, lines);
      try {
        // Warm-up, unrecorded; ASM's run gives the count and a line's event for the bare server.
        const { events, last } = await sides.asmRound();
        const delta = { ...last!, kind: 'assistant_delta', payload: { content: `${lines}\n`, index: 0 } };
        await sides.bareRound(events, delta);
        const asmCpu: number[] = [];
        const bareCpu: number[] = [];
        for (let r = 0; r < rounds; r++) {
          // Alternate which side goes first, so drift on a shared machine falls on both.
          if (r % 2 === 0) bareCpu.push(await sides.bareRound(events, delta));
          asmCpu.push((await sides.asmRound()).cpuUs);
          if (r % 2 === 1) bareCpu.push(await sides.bareRound(events, delta));
          log(`${mode} ${transport} round ${r + 1}: asm ${round(asmCpu.at(-1)!)} µs an event, bare ${round(bareCpu.at(-1)!)} µs`);
        }
        const [asmUs, bareUs] = [median(asmCpu), median(bareCpu)];
        return {
          events_per_round: events,
          asm_cpu_us_per_event: round(asmUs),
          bare_cpu_us_per_event: round(bareUs),
          asm_us_per_event_and_subscriber: round(asmUs / subscribers, 2),
          bare_us_per_event_and_subscriber: round(bareUs / subscribers, 2),
          ratio: round(asmUs / bareUs, 2),
          asm_rounds: asmCpu.map((us) => round(us)),
          bare_rounds: bareCpu.map((us) => round(us)),
        };
      } finally {
        sides.close();
        bare.stop();
      }
    },
    log,
  );
}

export async function run(args: string[]): Promise<void> {
  const at = args.indexOf('--transport');
  const transport = at < 0 ? 'ws' : args[at + 1];
  if (transport !== 'ws' && transport !== 'sse') throw new Error(`--transport: ws or sse, not ${transport}`);
  const subscribers = numberFlag(args, 'subscribers', 100);
  const lines = numberFlag(args, 'lines', 1000);
  const rounds = numberFlag(args, 'rounds', 3);
  const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl) => benchMode(mode, redisUrl, transport, subscribers, lines, rounds));
  process.stdout.write(`${JSON.stringify({ bench: 'fanout', date: new Date().toISOString(), machine, loadavg_after, transport, subscribers, lines, rounds, ...modes })}\n`);
}
