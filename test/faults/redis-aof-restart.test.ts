import { readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isTerminalRunState, type RunState } from '../../src/schemas/api.js';
import { TERMINAL_KINDS } from '../../src/schemas/events.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { killQuietly, processesWith, sleepMarker } from './processes.js';

/**
 * Redis with an append-only file, killed (SIGKILL) under load and started again on the same port and
 * directory, while one API process goes on (never restarted). Every run whose POST was answered 202
 * is counted: each must reach exactly one terminal state, and none may stay queued or running.
 *
 * `always` fsyncs every write before Redis answers it, so the crash loses nothing acknowledged.
 * `everysec` fsyncs once a second: a crash of Redis's host (power, kernel) loses what the page cache
 * held, up to about a second of acknowledged writes (two while a slow fsync postpones writes, when a
 * SIGKILL of the process alone loses them too). A SIGKILL alone keeps what reached the page cache, so
 * the lost window is forced here the way such a crash leaves the disk: the file cut back to its length
 * at a moment `cut`, with what ASM did after it (a run accepted, a run ended, events) lost.
 */

const ENV = {
  ASM_REDIS_PREFIX: 'aof',
  ASM_NODE_HEARTBEAT_MS: '200',
  ASM_NODE_TTL_MS: '1500',
  ASM_SWEEP_MS: '100',
  ASM_REDIS_COMMAND_TIMEOUT_MS: '1000',
  // A job whose lock the crash rolled back goes back to its lane within seconds, not the default 30.
  ASM_JOB_LOCK_MS: '2000',
  ASM_STALLED_INTERVAL_MS: '1000',
};
const cleanups: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function aofRedis(fsync: 'always' | 'everysec'): Promise<RedisServer> {
  const redis = await startRedisServer({ args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'yes', '--appendfsync', fsync] });
  cleanups.push(() => redis.dispose());
  return redis;
}

/** The file Redis appends to now: the last `incr` file of its multi-part AOF manifest (Redis 7). */
function incrFile(redis: RedisServer): string {
  const dir = join(redis.dir, 'appendonlydir');
  const manifest = readFileSync(join(dir, 'appendonly.aof.manifest'), 'utf8');
  const incr = [...manifest.matchAll(/^file (\S+) seq \d+ type i$/gm)].map((m) => m[1]!);
  expect(incr.length, manifest).toBeGreaterThan(0);
  return join(dir, incr[incr.length - 1]!);
}


/** Runs flowing: `loops` sessions, each submitting a short shell run after another; what was accepted is kept. */
function load(api: TestServer, marker: string, loops: number) {
  const accepted: Array<{ id: string }> = [];
  const refused: number[] = [];
  let running = true;
  const loop = async () => {
    const session = await api.request('POST', '/v1/sessions', { provider: 'shell', max_concurrent_runs: 2, max_queued_runs: 20 });
    expect(session.status).toBe(201);
    for (let n = 0; running; n++) {
      const reply = await api.request('POST', `/v1/sessions/${session.body.id}/runs`, { prompt: `: ${marker}; echo ${n}` }).catch(() => ({ status: 0, body: null }));
      if (reply.status === 202) accepted.push({ id: reply.body.id as string });
      else refused.push(reply.status);
      // Pacing, so that the runs flow without swamping two cores: not a wait for a condition.
      await new Promise((resolve) => setTimeout(resolve, reply.status === 202 ? 40 : 100));
    }
  };
  const loopsDone = Promise.all(Array.from({ length: loops }, loop));
  return {
    accepted,
    refused,
    stop: async () => {
      running = false;
      await loopsDone;
    },
  };
}

async function readyz(api: TestServer): Promise<number> {
  return (await api.request('GET', '/readyz')).status;
}

/** Redis is away: every /readyz answers 503, and a submit is refused (503), so it is not accepted. */
async function expectNotReadyWhileAway(api: TestServer): Promise<void> {
  for (let i = 0; i < 3; i++) expect(await readyz(api)).toBe(503);
  const refused = await api.request('POST', '/v1/sessions', { provider: 'shell' });
  expect(refused.status).toBe(503);
}

/** Redis again, on the same port and directory; the same API process answers ready, with no restart. */
async function restart(api: TestServer, redis: RedisServer): Promise<number> {
  const back = Date.now();
  await redis.start();
  await waitFor(async () => (await readyz(api)) === 200, 'the API to be ready again', 15_000);
  return Date.now() - back;
}

/** The run's stored state and how many terminal events its log holds; undefined when the store has no such run. */
async function outcome(api: TestServer, runId: string): Promise<{ state: RunState; terminals: number; error?: string } | undefined> {
  const run = await api.app.store.runs.get(runId);
  if (!run) return undefined;
  const events = await api.app.store.events.read(run.session_id, { after: 0, runId, limit: Number.MAX_SAFE_INTEGER });
  return { state: run.state, terminals: events.filter((e) => TERMINAL_KINDS.has(e.kind)).length, error: run.result?.error?.kind };
}

/** Within `ms`: every run the store knows ends, none left queued or running once the load has drained. */
async function untilNoneUnfinished(api: TestServer, ms: number, logLines: string[]): Promise<void> {
  try {
    await waitFor(async () => (await api.app.store.runs.listUnfinished()).length === 0, 'every run in the store to be terminal', ms);
  } catch (err) {
    const stuck = await api.app.store.runs.listUnfinished();
    const detail = await Promise.all(
      stuck.map(async (r) => ({ id: r.id, state: r.state, owner: r.owner, dispatched: r.dispatched, events: (await api.app.store.events.read(r.session_id, { after: 0, runId: r.id, limit: 100 })).map((e) => `${e.seq}:${e.kind}`) })),
    );
    // What the service logged of the stuck runs, and its warnings and errors: a stuck run is rare, and its cause is in these lines.
    const telling = logLines.filter((line) => stuck.some((r) => line.includes(r.id)) || /"level":[456]0/.test(line));
    throw new Error(`${String(err)}\n${JSON.stringify(detail, null, 1)}\n${telling.slice(-200).join('')}`);
  }
}

describe('Redis restarted with an append-only file, under load', () => {
  it('appendfsync always: a SIGKILL loses no accepted run; /readyz is 503 while Redis is away; ASM recovers by itself', async () => {
    const redis = await aofRedis('always');
    const logLines: string[] = [];
    const api = await startServer({ REDIS_URL: redis.url, ...ENV }, { logLines });
    cleanups.push(() => api.close());
    const marker = sleepMarker();
    cleanups.push(() => processesWith(marker).forEach(killQuietly));
    const flow = load(api, marker, 3);
    await waitFor(() => flow.accepted.length >= 15, 'runs to be accepted', 30_000);

    await redis.crash();
    await expectNotReadyWhileAway(api);
    const recoveryMs = await restart(api, redis);
    const acceptedAtCrash = flow.accepted.length;
    await waitFor(() => flow.accepted.length >= acceptedAtCrash + 10, 'runs to be accepted again', 30_000);
    await flow.stop();

    // Load drained on a loaded machine: 20 s is slack, not a bound of ASM's.
    await untilNoneUnfinished(api, 20_000, logLines);
    const outcomes = await Promise.all(flow.accepted.map((run) => outcome(api, run.id)));
    const lost = flow.accepted.filter((_, i) => outcomes[i] === undefined);
    expect(lost, 'accepted runs the store no longer knows').toEqual([]);
    for (const [i, found] of outcomes.entries()) {
      expect(isTerminalRunState(found!.state), `run ${flow.accepted[i]!.id} is ${found!.state}`).toBe(true);
      expect(found!.terminals, `terminal events of run ${flow.accepted[i]!.id}`).toBe(1);
    }
    expect(processesWith(marker)).toEqual([]);
    console.log(JSON.stringify({ fsync: 'always', accepted: flow.accepted.length, terminal: outcomes.length, lost: lost.length, refused: flow.refused.length, recovery_ms: recoveryMs }));
  });

  it('appendfsync everysec: the lost second after a crash is reconciled; no run stuck, none ended twice, no CLI left', async () => {
    const redis = await aofRedis('everysec');
    const logLines: string[] = [];
    const api = await startServer({ REDIS_URL: redis.url, ...ENV }, { logLines });
    cleanups.push(() => api.close());
    const marker = sleepMarker();
    cleanups.push(() => processesWith(marker).forEach(killQuietly));
    const gate = (name: string) => `while [ ! -e ${join(api.workspace, name)} ]; do sleep 0.05; done`;
    const open = (name: string) => writeFileSync(join(api.workspace, name), '');
    const probe = async (prompt: string) => {
      const session = await api.request('POST', '/v1/sessions', { provider: 'shell' });
      expect(session.status).toBe(201);
      const run = await api.request('POST', `/v1/sessions/${session.body.id}/runs`, { prompt: `: ${marker}; ${prompt}` });
      expect(run.status).toBe(202);
      return run.body.id as string;
    };
    const state = async (id: string) => (await api.app.store.runs.get(id))?.state;
    const printed = async (id: string) => {
      const run = (await api.app.store.runs.get(id))!;
      const events = await api.app.store.events.read(run.session_id, { after: 0, runId: id, limit: 1_000 });
      return events.filter((e) => e.kind === 'assistant_delta').map((e) => ({ seq: e.seq, text: (e.payload as { content: string }).content }));
    };

    // Running before the cut: `ends` ends inside the lost window; `spans` prints inside it and after.
    const ends = await probe(`${gate('end')}; echo ended`);
    const spans = await probe(`${gate('end')}; echo inside; ${gate('after')}; echo after`);
    await waitFor(async () => (await state(ends)) === 'running' && (await state(spans)) === 'running', 'the probes to be running', 30_000);
    const flow = load(api, marker, 2);
    await waitFor(() => flow.accepted.length >= 10, 'runs to be accepted', 30_000);

    // The cut: what Redis acknowledged so far is on disk; everything after it is the lost window,
    // which holds an end, events of a running run, a run accepted and started, and the load's runs.
    const file = incrFile(redis);
    const acceptedBeforeCut = new Set(flow.accepted.map((run) => run.id));
    const cut = statSync(file).size;
    open('end');
    const acceptedInside = await probe(`${gate('after')}; echo late`);
    await waitFor(async () => (await state(ends)) === 'completed' && (await state(acceptedInside)) === 'running', 'the window to hold an end and a start', 10_000);
    const inside = await waitFor(async () => (await printed(spans)).find((e) => e.text === 'inside\n'), 'the spanning run to print inside the window', 10_000);
    const insideSeq = inside.seq;

    await redis.crash();
    truncateSync(file, cut);
    await expectNotReadyWhileAway(api);
    const recoveryMs = await restart(api, redis);
    open('after');
    const acceptedAtRestart = flow.accepted.length;
    // Answered after the cut and before Redis came back (while it was away, submits were refused): inside the window.
    const acceptedInWindow = acceptedAtRestart - acceptedBeforeCut.size;
    await waitFor(() => flow.accepted.length >= acceptedAtRestart + 10, 'runs to be accepted again', 30_000);
    await flow.stop();
    // A session lock released inside the window comes back with Redis and holds its session until its
    // lease ends (2 × ASM_REDIS_COMMAND_TIMEOUT_MS, src/distributed.ts); then the waiting runs go. Slack
    // for the runs themselves on a loaded machine.
    await untilNoneUnfinished(api, 45_000, logLines);

    // Its end lost: the record said running here, this process no longer held it; reconciled to one precise end.
    const ended = await api.app.store.runs.get(ends);
    expect(ended).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost', details: { cause: 'store_lost_writes' } } } });
    expect((await outcome(api, ends))!.terminals).toBe(1);
    // Accepted inside the window: Redis has no record of it. Its CLI was stopped, and nothing of it was written after.
    expect(await api.app.store.runs.get(acceptedInside)).toBeUndefined();
    expect((await api.request('GET', `/v1/runs/${acceptedInside}`)).status).toBe(404);
    // Running across the window: it goes on and ends once, completed. What it printed inside the
    // window is in its result (projected where it ran) but gone from the log: the window's loss.
    const spanned = await api.app.store.runs.get(spans);
    expect(spanned).toMatchObject({ state: 'completed' });
    expect(spanned!.result?.text).toContain('inside');
    expect(spanned!.result?.text).toContain('after');
    expect((await outcome(api, spans))!.terminals).toBe(1);
    // Its next event took the lost one's seq: a client that saw seq `insideSeq` before the crash sees another event under it.
    expect((await printed(spans)).map((e) => [e.seq, e.text])).toEqual([[insideSeq, 'after\n']]);

    const outcomes = await Promise.all(flow.accepted.map((run) => outcome(api, run.id)));
    // Accepted inside the window, a load run may be gone with it (404); outside it, none may.
    const gone = flow.accepted.filter((_, i) => outcomes[i] === undefined);
    expect(gone.filter((run) => acceptedBeforeCut.has(run.id)), 'runs accepted before the cut that the store no longer knows').toEqual([]);
    for (const [i, found] of outcomes.entries()) {
      if (!found) continue;
      expect(isTerminalRunState(found.state), `run ${flow.accepted[i]!.id} is ${found.state}`).toBe(true);
      expect(found.terminals, `terminal events of run ${flow.accepted[i]!.id}`).toBe(1);
    }
    expect(processesWith(marker)).toEqual([]);
    console.log(
      JSON.stringify({
        fsync: 'everysec',
        accepted: flow.accepted.length + 3,
        terminal: outcomes.length - gone.length + 2,
        accepted_in_window: acceptedInWindow + 1,
        lost_in_window: gone.length + 1,
        ended_in_window: ended!.result!.error!.kind,
        recovery_ms: recoveryMs,
      }),
    );
  });
});
