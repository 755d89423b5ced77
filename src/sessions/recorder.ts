import type { Logger } from 'pino';
import { AsmError } from '../errors/kinds.js';
import { KeyedSerializer } from '../lanes/keyed-serializer.js';
import { runLogFields } from '../logger.js';
import type { Cluster } from '../nodes/cluster.js';
import { isTerminalRunState } from '../schemas/api.js';
import type { AsmEvent, EventKind, EventMetadata, EventPayload, ProviderEvent } from '../schemas/events.js';
import { runEventsAfter } from '../store/run-events.js';
import { newEventId } from '../store/stamp.js';
import type { NewEvent, RunRecord, Store } from '../store/types.js';
import type { ActiveRun, ActiveRuns } from './active-runs.js';
import { projectResult, type ProjectableEvent } from './projection.js';

/** Hears each event this process recorded: metrics count runs, approvals, tokens and cost from them (src/http/metrics.ts). */
export type RecordedEventListener = (event: AsmEvent, run: RunRecord) => void;

/** Long enough for one process to record a lost run's end before another may try. */
const ORPHAN_CLAIM_MS = 60_000;

export interface RunRecorderDeps {
  store: Store;
  cluster: Cluster;
  active: ActiveRuns;
  /** How long a run's writes wait out an unreachable store (ASM_REDIS_OUTAGE_MS). */
  outageMs: number;
  log: Logger;
}

/**
 * Writes what happens to runs: their events in order (one serialised chain per run), their state,
 * and their one terminal event, with the result projected from the events. Every write is durable
 * (retried through a store outage) and fenced (a run ended elsewhere writes nothing more). It
 * announces each run's end to its listeners (admission starts the session's next run).
 */
export class RunRecorder {
  private readonly store: Store;
  private readonly cluster: Cluster;
  private readonly active: ActiveRuns;
  private readonly log: Logger;
  /** The events of one run, serialised (run id → chain). */
  private readonly chains = new KeyedSerializer();
  private readonly endListeners: Array<(run: RunRecord) => void> = [];
  /** Waits in this process for the ends of a session's runs (RunEnds), by session id. */
  private readonly sessionEndListeners = new Map<string, Set<(ended: RunRecord) => void>>();
  private readonly eventListeners = new Set<RecordedEventListener>();

  constructor(private readonly deps: RunRecorderDeps) {
    this.store = deps.store;
    this.cluster = deps.cluster;
    this.active = deps.active;
    this.log = deps.log;
  }

  /** Called after each run's terminal event is stored. */
  onRunEnded(listener: (run: RunRecord) => void): void {
    this.endListeners.push(listener);
  }

  /**
   * Called with the run as it ended, once this process stored the terminal event of a run of
   * `sessionId`; returns the unsubscribe. A wait for a run it executes (RunEnds) has its answer here,
   * without hearing the event back from the store and reading the run: two hops in Redis mode.
   */
  onSessionRunEnded(sessionId: string, listener: (ended: RunRecord) => void): () => void {
    let listeners = this.sessionEndListeners.get(sessionId);
    if (!listeners) this.sessionEndListeners.set(sessionId, (listeners = new Set()));
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.sessionEndListeners.get(sessionId) === listeners) this.sessionEndListeners.delete(sessionId);
    };
  }

  /** Resolves once the writes queued for the run here (in `serialize`) are done or failed; at once for a run with none. */
  written(runId: string): Promise<void> {
    return this.serialize(runId, async () => undefined);
  }

  /** Called after each event this process records, with the run as it stands (after a terminal event: ended); returns the unsubscribe. */
  onEventRecorded(listener: RecordedEventListener): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Work on a run's record and events, after whatever is already queued for that run. */
  serialize<T>(runId: string, work: () => Promise<T>): Promise<T> {
    return this.chains.run(runId, work);
  }

  /** Append a non-terminal event (call inside `serialize`). */
  append<K extends EventKind>(run: RunRecord, kind: K, payload: EventPayload<K>): Promise<AsmEvent> {
    return this.appendDurably(run, newEvent(run, kind, payload));
  }

  /**
   * Record a new run and its first event (call inside `serialize`), sent together: one round trip in
   * Redis mode, where one connection keeps their order, so the event never lands before the record.
   * The record's write is tried once: when it fails, `onCreateFailed` runs, its error is thrown, and the
   * event is not tried again. An event whose one try failed after the record was written is retried
   * as any other (durably). The two go out in one write, so an outage fails both; only an error Redis
   * answered for the record alone (a damaged key) would leave its event, naming a run never stored:
   * that is logged.
   */
  async createRun<K extends EventKind>(run: RunRecord, kind: K, payload: EventPayload<K>, onCreateFailed: () => Promise<void>): Promise<AsmEvent> {
    const event = newEvent(run, kind, payload);
    const [created, firstTry] = await Promise.allSettled([this.store.runs.create(run), this.store.events.append(event)]);
    if (created.status === 'rejected') {
      if (firstTry.status === 'fulfilled') {
        this.log.error({ err: created.reason, kind, ...runLogFields(run) }, "a run's record could not be written but its first event was: the event names a run that was not stored");
      }
      await onCreateFailed();
      throw created.reason;
    }
    return this.appendDurably(run, event, firstTry);
  }

  /** Store `event` (durably; `firstTry`, where one was made, is taken if it succeeded) and tell the listeners. */
  private async appendDurably(run: RunRecord, event: NewEvent, firstTry?: PromiseSettledResult<AsmEvent>): Promise<AsmEvent> {
    const stored = firstTry?.status === 'fulfilled' ? firstTry.value : await this.durably(run.id, () => this.store.events.append(event));
    this.announce(stored, run);
    return stored;
  }

  /** Record run_started (call inside `serialize`), with the record's turn to running (withRecord). */
  async start(run: RunRecord, payload: EventPayload<'run_started'>): Promise<AsmEvent> {
    const timestamp = new Date().toISOString();
    return (await this.withRecord(run, { state: 'running', started_at: timestamp }, envelope(run, 'run_started', payload, timestamp))).event;
  }

  /** Append to a run that may have ended meanwhile (call inside `serialize`); false when it had. */
  async appendIfRunning<K extends EventKind>(runId: string, kind: K, payload: EventPayload<K>): Promise<boolean> {
    const run = await this.durably(runId, () => this.store.runs.get(runId));
    if (!run || isTerminalRunState(run.state)) return false;
    const stored = await this.append(run, kind, payload);
    this.active.get(runId)?.events.push(stored);
    return true;
  }

  /** Record the terminal event (call inside `serialize`): the run's result is projected from its events, this one included. Answers the run as it ended. */
  async finish(run: RunRecord, eventsSoFar: readonly ProjectableEvent[], terminal: ProviderEvent): Promise<RunRecord> {
    const timestamp = new Date().toISOString();
    const provisional = envelope(run, terminal.kind, terminal.payload, timestamp);
    const result = projectResult([...eventsSoFar, provisional]);
    // A retry (the reply lost with the connection) may find the run ended by its own first try: the
    // fence knows that end by its finished_at, and does not take it for one written elsewhere
    // (redis-aof-restart.test.ts).
    const { run: ended } = await this.withRecord(run, { state: result.status, finished_at: timestamp, result }, provisional, { ownEnd: timestamp });
    for (const listener of this.sessionEndListeners.get(run.session_id) ?? []) listener(ended);
    this.log.info({ ...runLogFields(run), sessionId: run.session_id, state: result.status, error: result.error?.kind }, 'run finished');
    for (const listener of this.endListeners) listener(run);
    return ended;
  }

  /**
   * The record's change and then the event, sent together: one round trip in Redis mode, where one
   * connection keeps their order, so a client that sees the event reads the run as it changed (running
   * at run_started, ended at the terminal event). Listeners are told the event with the changed run.
   */
  private async withRecord(run: RunRecord, change: Partial<RunRecord>, event: NewEvent, fence: { ownEnd?: string } = {}): Promise<{ event: AsmEvent; run: RunRecord }> {
    const [changed, stored] = await this.durably(run.id, () => Promise.all([this.store.runs.update(run.id, change), this.store.events.append(event)]), fence);
    const active = this.active.get(run.id);
    if (active) active.record = changed;
    this.announce(stored, changed);
    return { event: stored, run: changed };
  }

  /** An observer's mistake (metrics) never fails a run's write. */
  private announce(event: AsmEvent, run: RunRecord): void {
    for (const listener of this.eventListeners) {
      try {
        listener(event, run);
      } catch (err) {
        this.log.warn({ err, ...runLogFields(run), kind: event.kind }, 'an event observer failed');
      }
    }
  }

  /**
   * End a run that has no backend here: it never reached one (interrupted while queued, refused by
   * its lane, its node unreachable), or the process that ran it is gone.
   */
  finishWithoutStart(runId: string, error: AsmError): Promise<void> {
    return this.endUnfinished(runId, error);
  }

  /**
   * The end of finishWithoutStart, in the run's chain, unless it has ended already; `before` runs first
   * on the run as found (endLostEnd takes the record back there, so a repeated call writes nothing).
   */
  private endUnfinished(runId: string, error: AsmError, before?: (run: RunRecord) => Promise<unknown> | undefined): Promise<void> {
    return this.serialize(runId, async () => {
      const run = (await this.store.runs.get(runId))!;
      if (isTerminalRunState(run.state)) return;
      await before?.(run);
      await this.denyPendingApprovals(runId);
      const eventsSoFar = await this.store.events.read(run.session_id, { after: runEventsAfter(run, 0), runId, limit: Number.MAX_SAFE_INTEGER });
      await this.finish(run, eventsSoFar, { kind: 'error', payload: error.toBody() });
    });
  }

  /**
   * A run is ending: what it still waits on is resolved as denied (reason "run_ended"), inside its
   * serialised chain and before its terminal event. A run executing here that never asked for one
   * has none, and its end reads nothing (ActiveRun.mayHaveApprovals: one round trip less in Redis mode).
   */
  async denyPendingApprovals(runId: string): Promise<void> {
    if (this.active.get(runId)?.mayHaveApprovals === false) return;
    for (const approval of await this.durably(runId, () => this.store.approvals.listPending({ runId }))) {
      const outcome = await this.durably(runId, () => this.store.approvals.resolve(approval.id, 'deny', 'run_ended'));
      if (outcome.outcome !== 'resolved') continue;
      await this.appendIfRunning(runId, 'approval_resolved', { approval_id: approval.id, decision: 'deny', reason: 'run_ended' });
    }
  }

  /** End with node_lost a run whose owner stopped heartbeating; one process does it (a claim). */
  async endOrphan(run: RunRecord): Promise<void> {
    if (!(await this.cluster.claim(`orphan:${run.id}`, ORPHAN_CLAIM_MS))) return;
    this.log.warn({ ...runLogFields(run), owner: run.owner }, 'run lost its node; ending it');
    await this.finishWithoutStart(
      run.id,
      new AsmError('node_lost', `the node instance running this run (${run.owner ?? 'unknown'}) stopped heartbeating`, { details: { node: run.owner } }),
    );
  }

  /**
   * End a run whose end the store lost: it says this process took the run, but this process no longer
   * holds it (Redis came back without its last writes, or refused them while it was away: the terminal
   * event and state are gone). Or one stopped here because its record lost the write that took it
   * (Sweeper.reconcile): the record is given this process again first, since a run whose record names
   * another owner, or none, is fenced and would write nothing (stillOwned).
   */
  endLostEnd(run: RunRecord): Promise<void> {
    const error = new AsmError('node_lost', `the store lost this run's end (Redis lost or refused its writes) after ${this.cluster.self} took it; its outcome is unknown`, {
      details: { node: this.cluster.self, cause: 'store_lost_writes' },
    });
    return this.endUnfinished(run.id, error, (found) => {
      this.log.warn({ ...runLogFields(run), state: found.state, owner: found.owner }, 'the store lost the end of a run this process took, or the write that took it; ending it');
      return found.owner === this.cluster.self ? undefined : this.store.runs.update(run.id, { owner: this.cluster.self });
    });
  }

  /**
   * After the store came back from an outage it may have lost writes: each run executing here is
   * checked against its record before it writes again, as after a heartbeat lapse (stillOwned).
   */
  recheckOwnership(): Promise<void> {
    return this.checkStartedRuns(true);
  }

  /**
   * A write a run cannot do without (its events, its state). While the store is unreachable it is
   * retried, up to ASM_REDIS_OUTAGE_MS, so a short Redis outage delays a run's events but loses none;
   * requests meanwhile are refused with 503. A write whose reply was lost with the connection (Redis
   * applied it, then went away) is done again: an event is kept once (its id is stamped once, NewEvent),
   * a record update sets the same fields again. A run this process executes is first checked to
   * still be its own after a heartbeat lapse (see stillOwned); `ownEnd` is the finished_at of the end
   * this write records, which a retry may find already written by its own first try.
   */
  async durably<T>(runId: string, write: () => Promise<T>, { ownEnd }: { ownEnd?: string } = {}): Promise<T> {
    const giveUpAt = Date.now() + this.deps.outageMs;
    for (let pause = 50; ; pause = Math.min(pause * 2, 1_000)) {
      try {
        const active = this.active.get(runId);
        if (active && !(await this.stillOwned(runId, active, ownEnd))) {
          throw new AsmError('node_lost', `run ${runId} was ended elsewhere while this instance could not reach Redis; its later events are dropped`);
        }
        return await write();
      } catch (err) {
        if (!(err instanceof AsmError && err.kind === 'not_ready') || Date.now() + pause > giveUpAt) throw err;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  /** Runs this process executes, checked after a heartbeat lapse even if they have nothing to write. */
  fenceLostRuns(): Promise<void> {
    return this.checkStartedRuns(false);
  }

  /**
   * stillOwned for each unended run executing here, after a heartbeat lapse or, with `always`, now.
   * Only runs whose CLI started: ownership is written before that, so their record must name this
   * process; one still starting writes its owner next.
   */
  private async checkStartedRuns(always: boolean): Promise<void> {
    for (const [runId, active] of this.active) {
      if (active.backend === undefined || active.ended) continue;
      if (always) active.checkedLapses = -1;
      await this.stillOwned(runId, active);
    }
  }

  /**
   * After this instance's heartbeat lapsed (a partition, a long Redis outage), other instances may
   * have declared it lost and ended its runs with node_lost. Before such a run writes again, the
   * instance heartbeats first (so nobody can declare it lost after the check) and then reads the run:
   * a run ended elsewhere, or owned by someone else now, is fenced here: it writes nothing more and
   * its CLI is stopped. An end whose finished_at is `ownEnd` is this process's own. Costs nothing
   * while heartbeats are on time.
   */
  private async stillOwned(runId: string, active: ActiveRun, ownEnd?: string): Promise<boolean> {
    const lapses = this.cluster.heartbeatLapses();
    if (lapses === active.checkedLapses) return true;
    await this.cluster.announce();
    const run = await this.store.runs.get(runId);
    if (run && (!isTerminalRunState(run.state) || run.finished_at === ownEnd) && run.owner === this.cluster.self) {
      active.checkedLapses = lapses;
      return true;
    }
    if (!active.ended) {
      active.ended = true;
      this.log.warn({ runId, endedAs: run?.state }, 'run was ended elsewhere while this instance was unreachable; stopping it here');
      void active.backend?.interrupt('shutdown').catch(() => undefined);
    }
    // Started here, unfinished and with no owner, whether still running or writing its own end: the
    // store lost the write that took it (written before the CLI started), and nobody else would end it
    // (only owned runs are ended for a lost owner, sweeps.ts). Ended here, after this write gives up;
    // one held back for its lane's retry is its lane's (test/faults/redis-aof-restart.test.ts).
    if (run && !isTerminalRunState(run.state) && run.owner === null && active.backend !== undefined && active.startFailure === undefined) {
      void this.endLostEnd(run).catch((err: unknown) => this.log.error({ err, ...runLogFields(run) }, 'failed to end a run whose record lost its owner'));
    }
    return false;
  }
}

/** A non-terminal event of `run`, to append: the store stamps its time. */
function newEvent<K extends EventKind>(run: RunRecord, kind: K, payload: EventPayload<K>): NewEvent {
  const { timestamp: _unused, ...event } = envelope(run, kind, payload, '');
  return event;
}

/** The event as the run's writes retry it: its id is stamped once, so a retried append is stored once (NewEvent). */
function envelope<K extends EventKind>(run: RunRecord, kind: K, payload: EventPayload<K>, timestamp: string) {
  return {
    id: newEventId(),
    session_id: run.session_id,
    run_id: run.id,
    provider: run.provider,
    kind,
    payload: payload as Record<string, unknown>,
    metadata: run.observability as EventMetadata,
    timestamp,
  };
}
