import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { TERMINAL } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { AUTH, call, endedOnce, runEvents, sigkill, startCluster, SWEEP_MS, TTL_MS, type Api } from './cluster.js';

/**
 * SIGKILL of one of two API processes in the middle of runs, then its restart in place (same port,
 * environment and key prefix; a new instance id). Shell runs and fake-claude runs waiting for an
 * approval execute on both processes' lanes, and every session has a WebSocket subscriber on the
 * process that is killed. Counted afterwards: every session is still there; every run has exactly one
 * terminal event, which is `node_lost` for a run the killed process executed (within TTL + sweep of the
 * kill) and its normal end otherwise; a pending approval of a run on the survivor is answered through
 * the restarted process; each subscriber, resumed with `after` on the survivor or the restarted
 * process, read every event of its session exactly once, in seq order, as GET /v1/runs/{id}/events
 * returns them. Issue 13, Deliver 4.
 */

/** Scheduling slack on a loaded 2-core machine: the sweep's timer and the kill's notice may each run late. */
const SLACK_MS = 2_000;
const cleanups: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A WebSocket subscriber of one session that resumes with `after` (its last seq) whenever its socket
 * closes, on the next of `targets()`, until it has read the terminal event of each of `runIds`.
 */
class Subscriber {
  readonly seen: any[] = [];
  resumes = 0;
  private readonly ended = new Set<string>();
  readonly done: Promise<void>;

  constructor(
    readonly sessionId: string,
    private readonly runIds: string[],
    private readonly targets: () => string[],
  ) {
    this.done = new Promise((resolve, reject) => this.connect(0, resolve, reject));
  }

  private connect(attempt: number, resolve: () => void, reject: (err: Error) => void): void {
    const urls = this.targets();
    const url = urls[attempt % urls.length]!;
    const after = this.seen.at(-1)?.seq ?? 0;
    const socket = new WebSocket(`${url.replace('http', 'ws')}/v1/events?session_id=${this.sessionId}&after=${after}`, { headers: AUTH });
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type !== 'event') return;
      this.seen.push(frame.event);
      if (TERMINAL.has(frame.event.kind)) this.ended.add(frame.event.run_id);
      if (this.runIds.every((id) => this.ended.has(id))) {
        socket.close();
        resolve();
      }
    });
    socket.on('error', () => undefined); // the close that follows resumes
    socket.on('close', () => {
      if (this.runIds.every((id) => this.ended.has(id))) return;
      if (attempt > 600) return reject(new Error(`session ${this.sessionId}: gave up resuming`));
      this.resumes++;
      setTimeout(() => this.connect(attempt + 1, resolve, reject), 100);
    });
  }
}

describe('SIGKILL of an API process in the middle of runs, and its restart', () => {
  it('loses no session, run, approval or event, and WebSocket resume is exact', async () => {
    const cluster = await startCluster();
    cleanups.push(() => cluster.dispose());
    let a: Api = await cluster.api('api-a');
    const b = await cluster.api('api-b');
    const port = Number(new URL(a.url).port);

    // Six shell sessions, each with a long run and a second one waiting in the session's FIFO, and four
    // fake-claude sessions whose run waits for an approval: the skill (3) and prompt (2) lanes of one
    // process cannot hold them all, so both processes execute some.
    const shell = `for i in $(seq 1 60); do echo "line $i"; sleep 0.1; done`;
    const sessions: Array<{ id: string; runs: string[]; approval: boolean }> = [];
    for (let i = 0; i < 10; i++) {
      const approval = i >= 6;
      const via = i % 2 ? b : a;
      const created = await call(via, 'POST', '/v1/sessions', { provider: approval ? 'claude' : 'shell', lane: 'core' });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const prompts = approval ? ['Say hello, then create a file [fixture:c2-approve]'] : [shell, 'echo second'];
      const runs: string[] = [];
      for (const prompt of prompts) {
        const run = await call(via, 'POST', `/v1/sessions/${created.body.id}/runs`, { prompt });
        expect(run.status, JSON.stringify(run.body)).toBe(202);
        runs.push(run.body.id);
      }
      sessions.push({ id: created.body.id, runs, approval });
    }
    const runIds = sessions.flatMap((s) => s.runs);
    const firstRuns = sessions.map((s) => s.runs[0]!);

    // Every subscriber is attached to the process about to be killed; they resume alternately on the
    // survivor and on the restarted process (which refuses connections until it is back).
    let alternate = 0;
    const subscribers = sessions.map((s) => {
      const order = alternate++ % 2 ? [b.url, a.url] : [a.url, b.url];
      let attached = false;
      return new Subscriber(s.id, s.runs, () => (attached ? order : ((attached = true), [a.url])));
    });

    // In the middle: every first run started, the shell runs printing, the approvals pending.
    const approvals = new Map<string, string>();
    const nodeOf = new Map<string, string>();
    await waitFor(
      async () => {
        for (const s of sessions) {
          const events = await runEvents(b, s.runs[0]!);
          const started = events.find((e) => e.kind === 'run_started');
          if (!started) return false;
          nodeOf.set(s.runs[0]!, started.payload.node);
          if (s.approval) {
            const requested = events.find((e) => e.kind === 'approval_requested');
            if (!requested) return false;
            approvals.set(s.runs[0]!, requested.payload.approval_id);
          } else if (events.filter((e) => e.kind === 'assistant_delta').length < 3) return false;
        }
        return true;
      },
      'every first run to be under way',
      60_000,
    );
    const onA = firstRuns.filter((id) => nodeOf.get(id) === 'api-a');
    const onB = firstRuns.filter((id) => nodeOf.get(id) === 'api-b');
    expect(onA.length, 'runs executing on the process to kill').toBeGreaterThan(0);
    expect(onB.length, 'runs executing on the survivor').toBeGreaterThan(0);
    expect(onA.length + onB.length).toBe(firstRuns.length);

    const killedAt = await sigkill(a.process);
    a = await cluster.api('api-a', port);

    // A pending approval of a run on the survivor is answered through the restarted process.
    let answered = 0;
    for (const [runId, approvalId] of approvals) {
      if (nodeOf.get(runId) !== 'api-b') continue;
      answered++;
      const decided = await call(a, 'POST', `/v1/approvals/${approvalId}`, { decision: 'allow' });
      expect(decided.status, JSON.stringify(decided.body)).toBe(200);
    }
    await Promise.all(subscribers.map((s) => s.done));

    for (const s of sessions) {
      for (const api of [a, b]) expect((await call(api, 'GET', `/v1/sessions/${s.id}`)).status, `session ${s.id} on ${api.name}`).toBe(200);
    }
    const outcomes: Record<string, number> = {};
    let slowestLostMs = 0;
    const ended = new Map<string, any>();
    for (const runId of runIds) ended.set(runId, (await endedOnce(b, runId)).run);
    // The instance that was killed, as the runs seen executing there before the kill name it.
    const killedInstance = ended.get(onA[0]!).result?.error?.details?.node;
    expect(killedInstance, "the instance named by a run lost with the killed process").toMatch(/^api-a-/);
    for (const runId of runIds) {
      const run = ended.get(runId);
      // Held by the killed process when it died: a first run seen executing there, or a run of a
      // session's FIFO that took a slot freed before the kill and was fetched by that process's lane
      // (it ends node_lost naming that instance, never the survivor or the restarted process).
      if (onA.includes(runId) || run.result?.error?.details?.node === killedInstance) {
        expect(run, `run ${runId} on the killed process`).toMatchObject({ state: 'failed', result: { error: { kind: 'node_lost' } } });
        const lostMs = Date.parse(run.finished_at) - killedAt;
        expect(lostMs, `run ${runId} found lost`).toBeLessThan(TTL_MS + SWEEP_MS + SLACK_MS);
        slowestLostMs = Math.max(slowestLostMs, lostMs);
      } else {
        expect(run.state, `run ${runId}: ${JSON.stringify(run.result?.error ?? null)}`).toBe('completed');
      }
      const outcome = run.state === 'failed' ? run.result.error.kind : run.state;
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      // Its approval is not lost: answered (survivor), or closed with its run (killed process).
      if (approvals.has(runId)) {
        const approval = (await call(b, 'GET', `/v1/approvals/${approvals.get(runId)}`)).body;
        expect(approval.state, `approval of ${runId}`).not.toBe('pending');
      }
    }

    let resumes = 0;
    let stored = 0;
    let readOfRuns = 0;
    for (const subscriber of subscribers) {
      const seqs = subscriber.seen.map((e) => e.seq);
      expect(seqs, `session ${subscriber.sessionId}: seq order, no gap, no duplicate`).toEqual(seqs.map((_, i) => seqs[0] + i));
      const session = sessions.find((s) => s.id === subscriber.sessionId)!;
      const written = (await Promise.all(session.runs.map((id) => runEvents(b, id)))).flat().sort((x, y) => x.seq - y.seq);
      const read = subscriber.seen.filter((e) => session.runs.includes(e.run_id));
      expect(read.map((e) => [e.seq, e.id, e.kind]), `session ${session.id}: read = stored`).toEqual(written.map((e) => [e.seq, e.id, e.kind]));
      stored += written.length;
      readOfRuns += read.length;
      expect(subscriber.resumes, `session ${session.id} resumed after the kill`).toBeGreaterThan(0);
      resumes += subscriber.resumes;
    }
    // For bench/RESULTS.md: the counts of this run.
    console.log(JSON.stringify({ scenario: 'api-kill', runs: runIds.length, on_killed: onA.length, outcomes, slowest_lost_ms: slowestLostMs, approvals: approvals.size, answered_after_kill: answered, subscribers: subscribers.length, resumes, events_stored: stored, events_read: readOfRuns }));
  }, 150_000);
});
