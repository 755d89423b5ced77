/**
 * RunRecorder on the memory store: the order and seq of a run's events, its one terminal event with
 * the result projected from the events, the end announced to listeners, pending approvals denied
 * before the end, writes retried through a store outage, and a run ended elsewhere fenced here.
 */
import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { AsmError, cancelledRun } from '../../src/errors/kinds.js';
import { LocalCluster } from '../../src/nodes/local.js';
import type { AsmEvent } from '../../src/schemas/events.js';
import { projectResult } from '../../src/sessions/projection.js';
import { RunRecorder } from '../../src/sessions/recorder.js';
import { createMemoryStore } from '../../src/store/memory.js';
import type { RunRecord } from '../../src/store/types.js';
import { isTerminalEvent, makeRig, REPORT, withOutage, type Rig, type RigOptions } from './rig.js';
import { waitFor } from '../helpers/wait.js';

let rig: Rig;
afterEach(() => rig?.close());

/** A run admitted while its lane is paused: queued and dispatched, with no backend. */
async function parkedRun(options: RigOptions = {}): Promise<RunRecord> {
  rig = await makeRig(options);
  const session = await rig.session();
  await rig.engine.pause(session.queue);
  return rig.submit(session.id, 'anything');
}

const message = (content: string) => ({ content, model: null });

describe('RunRecorder', () => {
  it('appends overlapping serialised events in call order with gap-free seq, through a short store outage', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    const run = await parkedRun({ wrapStore: () => outage.store });
    // The first append meets two refused calls and is retried; the later ones wait behind it in the run's chain.
    outage.failNext(2);
    const contents = ['one', 'two', 'three', 'four', 'five'];
    const appended = await Promise.all(contents.map((c) => rig.recorder.serialize(run.id, () => rig.recorder.append(run, 'assistant_message', message(c)))));
    expect(outage.failedCalls()).toBe(2);
    expect(appended.map((e) => e.seq)).toEqual([2, 3, 4, 5, 6]);
    const stored = await rig.events(run.session_id);
    expect(stored.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(stored.map((e) => e.kind)).toEqual(['run_queued', ...contents.map(() => 'assistant_message')]);
    expect(stored.slice(1).map((e) => e.payload.content)).toEqual(contents);
  });

  it('records run_started with the run turning running at its time, once, through a short store outage', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    const run = await parkedRun({ wrapStore: () => outage.store });
    const heard: Array<{ kind: string; state: string }> = [];
    rig.recorder.onEventRecorded((event, current) => heard.push({ kind: event.kind, state: current.state }));
    // The record's update and the append sent with it are refused, and tried again together.
    outage.failNext(2);
    const started = await rig.recorder.serialize(run.id, () => rig.recorder.start(run, { provider_session_id: null, command: 'sh', args: ['-c', 'true'], cwd: '/tmp', node: 'test' }));
    expect(outage.failedCalls()).toBe(2);
    const events = await rig.events(run.session_id, run.id);
    expect(events.map((e) => e.kind)).toEqual(['run_queued', 'run_started']);
    expect(events[1]).toMatchObject({ id: started.id, seq: started.seq, timestamp: started.timestamp });
    expect(await rig.store.runs.get(run.id)).toMatchObject({ state: 'running', started_at: started.timestamp });
    expect(heard).toEqual([{ kind: 'run_started', state: 'running' }]);
  });

  it('records exactly one terminal event when finishWithoutStart is called twice, and tells each listener once', async () => {
    const run = await parkedRun();
    const heard: string[] = [];
    rig.recorder.onRunEnded((ended) => heard.push(ended.id));
    await rig.recorder.serialize(run.id, () => rig.recorder.append(run, 'assistant_message', message('partial answer')));
    await Promise.all([
      rig.recorder.finishWithoutStart(run.id, cancelledRun('before it started')),
      rig.recorder.finishWithoutStart(run.id, new AsmError('node_lost', 'second end')),
    ]);
    const events = await rig.events(run.session_id, run.id);
    const terminals = events.filter(isTerminalEvent);
    expect(terminals).toHaveLength(1);
    expect(terminals[0]).toMatchObject({ kind: 'error', payload: { kind: 'user_cancelled', retryable: false } });
    expect(events.at(-1)).toBe(terminals[0]);
    const final = (await rig.store.runs.get(run.id))!;
    expect(final.state).toBe('interrupted');
    expect(final.result).toMatchObject({ status: 'interrupted', text: 'partial answer', stop_reason: 'user_cancelled', error: { kind: 'user_cancelled' } });
    expect(heard.filter((id) => id === run.id)).toEqual([run.id]);
  });

  it('projects the result from the events, the terminal one included, exactly as a replaying client would', async () => {
    const run = await parkedRun();
    await rig.recorder.serialize(run.id, async () => {
      await rig.recorder.append(run, 'assistant_delta', { content: 'Hel', index: 0 });
      await rig.recorder.append(run, 'assistant_delta', { content: 'lo', index: 1 });
      await rig.recorder.append(run, 'cost_update', { input_tokens: 3, output_tokens: 4, total_tokens: 7, cost_usd: 0.25 });
      const soFar = await rig.events(run.session_id, run.id);
      await rig.recorder.finish(run, soFar, { kind: 'result', payload: { status: 'completed', stop_reason: 'end_turn', usage: null, cost_usd: null, duration_ms: null } });
    });
    const events = await rig.events(run.session_id, run.id);
    const final = (await rig.store.runs.get(run.id))!;
    expect(final.state).toBe('completed');
    expect(final.result).toMatchObject({
      status: 'completed',
      text: 'Hello',
      stop_reason: 'end_turn',
      usage: { input_tokens: 3, output_tokens: 4, total_tokens: 7 },
      cost_usd: 0.25,
    });
    expect(final.finished_at).toBe(events.at(-1)!.timestamp);
    expect(final.result).toEqual(projectResult(events));
  });

  it('denies a pending approval with reason run_ended before the terminal event', async () => {
    const run = await parkedRun();
    await rig.recorder.serialize(run.id, async () => {
      const payload = { approval_id: 'appr_1', subject: 'Bash', details: { tool_input: { command: 'ls' } }, expires_at: new Date(Date.now() + 60_000).toISOString() };
      await rig.approvals.record(run, payload);
      await rig.recorder.append(run, 'approval_requested', payload);
    });
    await rig.recorder.finishWithoutStart(run.id, new AsmError('node_lost', 'its node stopped heartbeating'));
    const events = await rig.events(run.session_id, run.id);
    expect(events.map((e) => e.kind)).toEqual(['run_queued', 'approval_requested', 'approval_resolved', 'error']);
    expect(events[2].payload).toEqual({ approval_id: 'appr_1', decision: 'deny', reason: 'run_ended' });
    expect(events[3].payload).toMatchObject({ kind: 'node_lost' });
    expect(await rig.store.approvals.get('appr_1')).toMatchObject({ state: 'resolved', decision: 'deny', reason: 'run_ended' });
    expect((await rig.store.runs.get(run.id))!.state).toBe('failed');
  });

  it('gives up on a write after outageMs of not_ready, and never retries another error', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    const run = await parkedRun({ wrapStore: () => outage.store, outageMs: 400 });
    outage.failNext(Number.MAX_SAFE_INTEGER);
    const startedAt = Date.now();
    const write = () => outage.store.events.append({ session_id: run.session_id, run_id: run.id, provider: run.provider, kind: 'stderr', payload: { content: 'x' }, metadata: run.observability });
    await expect(rig.recorder.durably(run.id, write)).rejects.toMatchObject({ kind: 'not_ready' });
    const elapsed = Date.now() - startedAt;
    expect(outage.failedCalls()).toBeGreaterThanOrEqual(3);
    expect(elapsed).toBeLessThan(400 + 500);
    outage.failNext(0);
    expect((await rig.events(run.session_id, run.id)).map((e) => e.kind)).toEqual(['run_queued']);

    let attempts = 0;
    const refused = () => {
      attempts++;
      return Promise.reject(new AsmError('conflict', 'not an outage'));
    };
    await expect(rig.recorder.durably(run.id, refused)).rejects.toMatchObject({ kind: 'conflict' });
    expect(attempts).toBe(1);
  });

  // Ending a run writes its record and its terminal event; those writes wait out an outage too.
  it('records the terminal event of a run that ends during a short store outage', async () => {
    const outage = withOutage(createMemoryStore({ eventsPerSession: 1_000 }));
    rig = await makeRig({ wrapStore: () => outage.store });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'hang after starting [fixture:never-prints]');
    await rig.event(session.id, (e) => e.run_id === run.id && e.kind === 'run_started');
    await rig.recorder.serialize(run.id, async () => undefined); // run_started is fully recorded
    // The store is unreachable for the first call after the CLI ends (the conversation kept on its session).
    const backend = rig.active.get(run.id)!.backend!;
    outage.failNext(1);
    await backend.interrupt('user');
    await backend.done;
    await rig.recorder.serialize(run.id, async () => undefined); // its end is recorded, retried through the outage
    expect(await rig.ended(run.id, 3_000)).toMatchObject({ state: 'interrupted' });
    expect(outage.failedCalls()).toBe(1);
    expect((await rig.events(session.id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
  });

  it('reads no pending approvals at the end of a run that asked for none; one that asked has its approval denied', async () => {
    const reads: string[] = [];
    rig = await makeRig({
      wrapStore: (store) => {
        const listPending = store.approvals.listPending.bind(store.approvals);
        store.approvals.listPending = (filter) => {
          reads.push(filter.runId ?? '');
          return listPending(filter);
        };
        return store;
      },
    });
    const session = await rig.session();
    const quiet = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    expect(await rig.ended(quiet.id)).toMatchObject({ state: 'completed' });
    expect(reads).toEqual([]);

    const asking = await rig.submit(session.id, 'create a file [fixture:c2-approve]');
    const requested = await rig.event(session.id, (e) => e.run_id === asking.id && e.kind === 'approval_requested');
    await rig.active.get(asking.id)!.backend!.interrupt('user');
    expect(await rig.ended(asking.id)).toMatchObject({ state: 'interrupted' });
    expect(reads).toEqual([asking.id]);
    expect(await rig.store.approvals.get(requested.payload.approval_id as string)).toMatchObject({ decision: 'deny', reason: 'run_ended' });
  });

  // The end's record and event are written together; the event's write failing after the record's
  // landed leaves the run ended by this process's own first try, which the retry must not take for
  // an end written elsewhere, even after a heartbeat lapse makes it read the run.
  it('a retried end that finds the run ended by its own first try, after a heartbeat lapse, records its terminal event once', async () => {
    const cluster = new LapsingCluster();
    let failTerminal = true;
    rig = await makeRig({
      cluster,
      wrapStore: (store) => {
        const append = store.events.append.bind(store.events);
        store.events.append = (event) => {
          if (failTerminal && isTerminalEvent(event as AsmEvent)) {
            failTerminal = false;
            cluster.lapse();
            return Promise.reject(new AsmError('not_ready', 'store unreachable (injected outage)'));
          }
          return append(event);
        };
        return store;
      },
    });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'hello [fixture:c1-hello]');
    const final = await rig.ended(run.id);
    expect(failTerminal).toBe(false);
    expect(final.state).toBe('completed');
    const events = await rig.events(session.id, run.id);
    expect(events.filter(isTerminalEvent).map((e) => e.kind)).toEqual(['result']);
    expect(final.finished_at).toBe(events.at(-1)!.timestamp);
  });

  it('ends an orphaned run with node_lost naming its owner', async () => {
    const run = await parkedRun();
    const owned = await rig.store.runs.update(run.id, { owner: 'gone-instance' });
    await rig.recorder.endOrphan(owned);
    const final = (await rig.store.runs.get(run.id))!;
    expect(final.state).toBe('failed');
    expect(final.result!.error).toMatchObject({ kind: 'node_lost', details: { node: 'gone-instance' } });
    expect((await rig.events(run.session_id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
  });

  it('fences a run ended elsewhere during a heartbeat lapse: its writes are refused and its CLI stopped', async () => {
    const cluster = new LapsingCluster();
    rig = await makeRig({ cluster });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'hang after starting [fixture:never-prints]');
    await rig.event(session.id, (e) => e.run_id === run.id && e.kind === 'run_started');
    expect(rig.active.get(run.id)?.backend).toBeDefined();

    // Meanwhile another process declared this one lost and ended the run (with its own recorder).
    const elsewhere = new RunRecorder({ store: rig.store, cluster: new LocalCluster('other-instance', REPORT), active: new Map(), outageMs: 1_000, log: pino({ level: 'silent' }) });
    await elsewhere.endOrphan((await rig.store.runs.get(run.id))!);
    cluster.lapse();

    await expect(rig.recorder.serialize(run.id, () => rig.recorder.append(run, 'assistant_message', message('too late')))).rejects.toMatchObject({ kind: 'node_lost' });
    // The CLI is stopped; the executor lets go of the run without recording a second end.
    await waitFor(() => !rig.active.has(run.id), 'the fenced run to stop', 10_000);
    const events: AsmEvent[] = await rig.events(session.id, run.id);
    expect(events.filter(isTerminalEvent).map((e) => e.payload.kind)).toEqual(['node_lost']);
    expect(events.some((e) => e.kind === 'assistant_message')).toBe(false);
    expect((await rig.store.runs.get(run.id))!.result!.error!.kind).toBe('node_lost');
  });
});

/**
 * Fault injection on the real LocalCluster: its heartbeat can be made to lapse, as a partitioned
 * instance's does (a LocalCluster never lapses by itself).
 */
class LapsingCluster extends LocalCluster {
  private lapses = 0;

  constructor() {
    super('test-instance', REPORT);
  }

  lapse(): void {
    this.lapses++;
  }

  override heartbeatLapses(): number {
    return this.lapses;
  }
}
