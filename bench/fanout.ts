/**
 * Fan-out benchmark (issue 14): the server's CPU per event while N WebSocket clients follow one
 * session, against a bare `ws` server (bench/bare-ws-server.ts) sending every client each event of a
 * burst of the same size, serialised once per event. ASM's events come from a shell run printing
 * `--lines` lines; the bare server sends as many copies of one of those events. Rounds alternate
 * between the two; CPU comes from /proc (user and system, all threads). Embedded and Redis mode.
 * Prints one JSON line; progress goes to stderr.
 *
 * Usage: npm run bench -- fanout [embedded|redis] [--subscribers N] [--lines N] [--rounds N]
 *   defaults: 100 subscribers, 1000 lines, 3 rounds
 */
import WebSocket from 'ws';
import { TERMINAL_KINDS } from '../src/schemas/events.js';
import { waitFor } from '../test/helpers/wait.js';
import { AUTH, cpuMs, inModes, logger, median, numberFlag, round, startAsm, startBaseline, withServers, type Mode } from './asm-server.js';

const log = logger('fanout');

/** N clients of one event stream; `received` counts each client's event frames, `last` keeps one event. */
async function followers(url: string, n: number, headers: Record<string, string>, ready: 'open' | 'subscribed') {
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

/** How long a round may take to reach every client before the bench fails rather than hangs. */
const ROUND_TIMEOUT_MS = 120_000;

async function benchMode(mode: Mode, redisUrl: string | undefined, subscribers: number, lines: number, rounds: number) {
  const asm = await startAsm(mode, redisUrl);
  return withServers(
    [asm],
    async () => {
      const bare = await startBaseline('./bare-ws-server.ts');
      const session = (await asm.post('/v1/sessions', { provider: 'shell' })).id;
      const ours = await followers(`${asm.url.replace('http', 'ws')}/v1/events?session_id=${session}`, subscribers, AUTH, 'subscribed');
      const theirs = await followers(`${bare.url.replace('http', 'ws')}/v1/events`, subscribers, {}, 'open');
      try {
        /** µs of the server's CPU per event handed to every client, and the events each client got. */
        const asmRound = async () => {
          const [before, frames, ended] = [cpuMs(asm.process.child.pid!), ours.total(), ours.state.ended];
          await asm.post(`/v1/sessions/${session}/runs`, { prompt: `seq 1 ${lines}` });
          await waitFor(() => ours.state.ended - ended === subscribers, `the run's end at all ${subscribers} ASM clients`, ROUND_TIMEOUT_MS);
          const events = (ours.total() - frames) / subscribers;
          return { cpuUs: ((cpuMs(asm.process.child.pid!) - before) * 1000) / events, events };
        };
        const bareRound = async (events: number, event: Record<string, unknown>) => {
          const [before, frames] = [cpuMs(bare.pid), theirs.total()];
          await fetch(`${bare.url}/emit`, { method: 'POST', body: JSON.stringify({ count: events, event }) });
          await waitFor(() => theirs.total() - frames === events * subscribers, `the burst at all ${subscribers} bare clients`, ROUND_TIMEOUT_MS);
          return ((cpuMs(bare.pid) - before) * 1000) / events;
        };
        // Warm-up, unrecorded; ASM's run gives the count and a line's event for the bare server.
        const { events } = await asmRound();
        const event = ours.state.last!;
        const delta = { ...event, kind: 'assistant_delta', payload: { content: `${lines}\n`, index: 0 } };
        await bareRound(events, delta);
        const asmCpu: number[] = [];
        const bareCpu: number[] = [];
        for (let r = 0; r < rounds; r++) {
          // Alternate which side goes first, so drift on a shared machine falls on both.
          if (r % 2 === 0) bareCpu.push(await bareRound(events, delta));
          asmCpu.push((await asmRound()).cpuUs);
          if (r % 2 === 1) bareCpu.push(await bareRound(events, delta));
          log(`${mode} round ${r + 1}: asm ${round(asmCpu.at(-1)!)} µs an event, bare ${round(bareCpu.at(-1)!)} µs`);
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
        ours.close();
        theirs.close();
        bare.stop();
      }
    },
    log,
  );
}

export async function run(args: string[]): Promise<void> {
  const subscribers = numberFlag(args, 'subscribers', 100);
  const lines = numberFlag(args, 'lines', 1000);
  const rounds = numberFlag(args, 'rounds', 3);
  const { machine, loadavg_after, modes } = await inModes(args, (mode, redisUrl) => benchMode(mode, redisUrl, subscribers, lines, rounds));
  process.stdout.write(`${JSON.stringify({ bench: 'fanout', date: new Date().toISOString(), machine, loadavg_after, subscribers, lines, rounds, ...modes })}\n`);
}
