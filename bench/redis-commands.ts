/**
 * Redis commands per request and per run (issue 14): `asm serve` in Redis mode on a private
 * redis-server, watched by MONITOR while one operation at a time is repeated. Counts what each
 * operation costs the server: commands its clients send; the round trips they took (Redis's count
 * of read events on its clients' sockets, INFO `total_reads_processed`), which is what a host where
 * a system call is dear pays by (bench/RESULTS.md, fourteenth pass); the commands scripts run inside
 * Redis; and which keys they touch (the lanes' BullMQ keys, `{…}` with the lanes' prefix,
 * `bench<port>:…`, or the store's). The engines' idle commands and round trips (blocking pops,
 * heartbeats, sweeps) are measured alone first and subtracted per second. Prints one JSON line;
 * progress goes to stderr.
 *
 * `submit_queued` is `POST /v1/sessions/{id}/runs` with the runs' lane paused, as `http` measures it.
 *
 * Usage: npm run bench -- redis-commands [--count N] [--dump]
 */
import { Redis } from 'ioredis';
import { performance } from 'node:perf_hooks';
import { startRedisServer } from '../test/helpers/redis-server.js';
import { logger, machine, numberFlag, round, startAsm, withServers } from './asm-server.js';

const log = logger('redis-commands');

interface Tally {
  client: number;
  script: number;
  lanes: number;
  store: number;
  byCommand: Record<string, number>;
}

const empty = (): Tally => ({ client: 0, script: 0, lanes: 0, store: 0, byCommand: {} });

export async function run(args: string[]): Promise<void> {
  const count = numberFlag(args, 'count', 100);
  const redis = await startRedisServer();
  const asm = await startAsm('redis', redis.url);
  const client = new Redis(redis.url);
  const monitor = await client.monitor();
  let tally = empty();
  // --dump: every command of the last repetition of each operation on stderr.
  let dump = false;
  monitor.on('monitor', (_time: string, argv: string[], source: string) => {
    const command = String(argv[0]).toLowerCase();
    // MONITOR shows a script's inner commands with the source "lua"; EVALSHA and the like are the client's.
    if (source === 'lua') tally.script++;
    else tally.client++;
    const key = String(argv[command.startsWith('eval') ? 3 : 1] ?? '');
    if (key.startsWith('{')) tally.lanes++;
    else tally.store++;
    tally.byCommand[command] = (tally.byCommand[command] ?? 0) + 1;
    if (dump) process.stderr.write(`${source === 'lua' ? '    ' : ''}${argv.map((a) => String(a).slice(0, 80)).join(' ')}\n`);
  });
  // Redis's count of read events on its clients' sockets: one per batch of commands a connection
  // sends (auto-pipelined commands arrive together), i.e. the round trips the clients made, which
  // MONITOR cannot tell apart from commands. An INFO counts its own read.
  const readsProcessed = async () => Number(/total_reads_processed:(\d+)/.exec(await client.info('stats'))![1]);
  const counted = async (times: number, once: (i: number) => Promise<unknown>) => {
    tally = empty();
    const readsBefore = await readsProcessed();
    const started = performance.now();
    for (let i = 0; i < times; i++) {
      dump = args.includes('--dump') && i === times - 1;
      await once(i);
    }
    dump = false;
    const seconds = (performance.now() - started) / 1000;
    const reads = (await readsProcessed()) - readsBefore - 1;
    return { tally, seconds, reads };
  };
  try {
    const result = await withServers(
      [asm],
      async () => {
        const session = await asm.post('/v1/sessions', { provider: 'shell' });
        const runRecord = await asm.post(`/v1/sessions/${session.id}/runs`, { prompt: 'true', wait: true });
        const queuedSession = await asm.post('/v1/sessions', { provider: 'shell', max_concurrent_runs: 64, max_queued_runs: 10_000 });
        const eventsRun = await asm.post(`/v1/sessions/${session.id}/runs`, { prompt: 'seq 1 96', wait: true });
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const idle = await counted(1, () => new Promise((resolve) => setTimeout(resolve, 3000)));
        const idlePerSecond = (idle.tally.client + idle.tally.script) / idle.seconds;
        const idleReadsPerSecond = idle.reads / idle.seconds;
        log(`idle: ${round(idlePerSecond)} commands/s, ${round(idleReadsPerSecond)} round trips/s ${JSON.stringify(idle.tally.byCommand)}`);
        const ops: Record<string, (i: number) => Promise<unknown>> = {
          create_session: () => asm.post('/v1/sessions', { provider: 'shell' }),
          get_run: () => asm.get(`/v1/runs/${runRecord.id}`),
          get_events: () => asm.get(`/v1/runs/${eventsRun.id}/events?after=0`),
          run: () => asm.post(`/v1/sessions/${session.id}/runs`, { prompt: 'true', wait: true }),
          // Last, as http.ts measures it: a submit to a paused lane, the request path without the spawn.
          submit_queued: () => asm.post(`/v1/sessions/${queuedSession.id}/runs`, { prompt: 'true' }),
        };
        const out: Record<string, unknown> = { idle_per_s: round(idlePerSecond), idle_round_trips_per_s: round(idleReadsPerSecond) };
        for (const [name, once] of Object.entries(ops)) {
          if (name === 'submit_queued') await asm.post(`/v1/queues/${session.queue}/pause`, {});
          const { tally: t, seconds, reads } = await counted(count, once);
          const idleShare = idlePerSecond * seconds;
          const per = (n: number) => round(n / count, 1);
          const top = Object.entries(t.byCommand)
            .sort((a, b) => b[1] - a[1])
            .slice(0, 8)
            .map(([c, n]) => `${c} ${per(n)}`);
          out[name] = {
            commands: per(t.client + t.script - idleShare),
            round_trips: per(reads - idleReadsPerSecond * seconds),
            client_commands: per(t.client),
            script_commands: per(t.script),
            lanes_keys: per(t.lanes),
            store_keys: per(t.store),
            top,
          };
          log(`${name}: ${JSON.stringify(out[name])}`);
        }
        return out;
      },
      log,
    );
    process.stdout.write(`${JSON.stringify({ bench: 'redis-commands', date: new Date().toISOString(), machine: machine(), count, ...result })}\n`);
  } finally {
    // Both: the client that asked for MONITOR keeps its own connection, which would retry forever once Redis stops.
    monitor.disconnect();
    client.disconnect();
    await redis.dispose();
  }
}
