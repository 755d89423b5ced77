import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { AsmApp } from '../app.js';
import type { LaneMetrics } from '../lanes/types.js';
import { TERMINAL_KINDS, type AsmEvent } from '../schemas/events.js';
import type { RunRecord } from '../store/types.js';

/**
 * Every Prometheus metric of one ASM process (GET /metrics), in one registry of its own: tests and
 * benches build many apps in one process, and the global registry would mix them. Labels are bounded
 * sets only: route patterns (never URLs), providers, backends and queues of the configuration, run
 * states, error kinds and event kinds of the closed vocabularies. No session, run, approval or tenant
 * id is a label: tenants come from a file that may list thousands, so no per-tenant series.
 *
 * Runs, approvals, tokens, cost and events are counted from the events this process records
 * (RunRecorder.onEventRecorded), so in distributed mode each process counts the work it did and
 * Prometheus sums the processes without counting anything twice.
 */

export type StreamTransport = 'websocket' | 'sse';

/** Seconds: from a fast HTTP answer to a slow one (a long `wait`). */
const HTTP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Seconds: agent runs last from a second to an hour. */
const RUN_BUCKETS = [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600];
/** Seconds: a run's wait in its session's FIFO and on its lane, or a person's answer to an approval. */
const WAIT_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600];

const LANE_GAUGES = [
  ['asm_lane_pending', 'Commands waiting in the lane', (m: LaneMetrics) => m.pending],
  ['asm_lane_active', 'Commands running in the lane', (m: LaneMetrics) => m.active],
  ['asm_lane_delayed', 'Retries waiting out their backoff', (m: LaneMetrics) => m.delayed],
] as const;

const LANE_COUNTERS = [
  ['submitted', (m: LaneMetrics) => m.submitted],
  ['completed', (m: LaneMetrics) => m.completed],
  ['failed', (m: LaneMetrics) => m.failed],
  ['timeout', (m: LaneMetrics) => m.timeout],
  ['retried', (m: LaneMetrics) => m.retried],
  ['dead_lettered', (m: LaneMetrics) => m.deadLettered],
  ['cancelled', (m: LaneMetrics) => m.cancelled],
] as const;

/** Who decided an approval, from the reason the service records (approvals.ts, sweeps.ts, recorder.ts). */
function decidedBy(reason: unknown): 'timeout' | 'session_grant' | 'run_ended' | 'user' {
  if (reason === 'timeout') return 'timeout';
  if (reason === 'allowed_for_session') return 'session_grant';
  if (reason === 'run_ended') return 'run_ended';
  return 'user';
}

const seconds = (from: string, to: string) => Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000);

export class AsmMetrics {
  readonly registry = new Registry();
  private readonly stopObserving: () => void;
  private readonly http: Histogram<'method' | 'route' | 'status_code'>;
  private readonly runsStarted: Counter<'provider' | 'backend' | 'queue'>;
  private readonly runsFinished: Counter<'provider' | 'backend' | 'queue' | 'state' | 'error_kind'>;
  private readonly runDuration: Histogram<'provider' | 'backend' | 'state'>;
  private readonly queueWait: Histogram<'provider' | 'queue'>;
  private readonly approvalsRequested: Counter<'provider'>;
  private readonly approvalsDecided: Counter<'provider' | 'decision' | 'by'>;
  private readonly approvalWait: Histogram<'decision' | 'by'>;
  private readonly tokens: Counter<'provider' | 'type'>;
  private readonly cost: Counter<'provider'>;
  private readonly events: Counter<'kind'>;
  private readonly streamClients: Gauge<'transport'>;
  private readonly slowConsumerCloses: Counter<'transport'>;

  constructor(private readonly app: AsmApp) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.http = new Histogram({
      name: 'asm_http_request_duration_seconds',
      help: 'HTTP requests by method, route pattern and status code',
      labelNames: ['method', 'route', 'status_code'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.runsStarted = new Counter({ name: 'asm_runs_started_total', help: 'Runs whose CLI started in this process', labelNames: ['provider', 'backend', 'queue'], registers });
    this.runsFinished = new Counter({
      name: 'asm_runs_finished_total',
      help: 'Runs ended by this process, by terminal state and error kind ("none" when it did not fail)',
      labelNames: ['provider', 'backend', 'queue', 'state', 'error_kind'],
      registers,
    });
    this.runDuration = new Histogram({
      name: 'asm_run_duration_seconds',
      help: 'From run_started to the terminal event, of the runs that started',
      labelNames: ['provider', 'backend', 'state'],
      buckets: RUN_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'asm_run_queue_wait_seconds',
      help: 'From the run being accepted to its CLI starting: the session FIFO and the lane',
      labelNames: ['provider', 'queue'],
      buckets: WAIT_BUCKETS,
      registers,
    });
    new Gauge({
      name: 'asm_runs_active',
      help: 'Runs executing in this process now',
      registers,
      collect() {
        this.set(app.sessions.activeRuns());
      },
    });
    this.approvalsRequested = new Counter({ name: 'asm_approvals_requested_total', help: 'Approvals the CLIs asked for', labelNames: ['provider'], registers });
    this.approvalsDecided = new Counter({
      name: 'asm_approvals_decided_total',
      help: 'Approvals decided, by decision and by whom: user, timeout, session_grant (allow_for_session), run_ended',
      labelNames: ['provider', 'decision', 'by'],
      registers,
    });
    this.approvalWait = new Histogram({
      name: 'asm_approval_wait_seconds',
      help: 'From an approval being requested to its decision',
      labelNames: ['decision', 'by'],
      buckets: WAIT_BUCKETS,
      registers,
    });
    this.tokens = new Counter({ name: 'asm_tokens_total', help: 'Tokens the runs used, from their results', labelNames: ['provider', 'type'], registers });
    this.cost = new Counter({ name: 'asm_cost_usd_total', help: 'Cost the providers reported for the runs, in US dollars', labelNames: ['provider'], registers });
    this.events = new Counter({ name: 'asm_events_appended_total', help: 'Events this process appended, by kind', labelNames: ['kind'], registers });
    this.streamClients = new Gauge({ name: 'asm_event_stream_clients', help: 'Open event streams (WebSocket /v1/events, SSE)', labelNames: ['transport'], registers });
    this.slowConsumerCloses = new Counter({
      name: 'asm_event_stream_slow_consumer_closes_total',
      help: 'Event streams closed because the client fell too far behind (close code 4008)',
      labelNames: ['transport'],
      registers,
    });
    for (const transport of ['websocket', 'sse'] as const) {
      this.streamClients.set({ transport }, 0);
      this.slowConsumerCloses.inc({ transport }, 0);
    }
    this.processMetrics();
    this.laneMetrics();
    this.stopObserving = app.sessions.onEventRecorded((event, run) => this.observe(event, run));
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  close(): void {
    this.stopObserving();
  }

  /** Each request of `fastify` observed once answered, by route pattern; the registry closed with the server. */
  observeRequestsOf(fastify: FastifyInstance): void {
    // A hook that takes `done` rather than an async one: no promise per request.
    fastify.addHook('onResponse', (request, reply, done) => {
      this.http.observe({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) }, reply.elapsedTime / 1000);
      done();
    });
    fastify.addHook('onClose', async () => this.close());
  }

  /** One stream opened; the returned function closes it (once, however often it is called). */
  streamOpened(transport: StreamTransport): () => void {
    this.streamClients.inc({ transport });
    let open = true;
    return () => {
      if (open) this.streamClients.dec({ transport });
      open = false;
    };
  }

  slowConsumerClosed(transport: StreamTransport): void {
    this.slowConsumerCloses.inc({ transport });
  }

  private observe(event: AsmEvent, run: RunRecord): void {
    this.events.inc({ kind: event.kind });
    const { provider, queue } = run;
    const backend = run.observability.backend;
    if (event.kind === 'run_started') {
      this.runsStarted.inc({ provider, backend, queue });
      this.queueWait.observe({ provider, queue }, seconds(run.created_at, event.timestamp));
    } else if (event.kind === 'approval_requested') {
      this.approvalsRequested.inc({ provider });
    } else if (event.kind === 'approval_resolved') {
      this.approvalResolved(provider, event.payload);
    } else if (TERMINAL_KINDS.has(event.kind)) {
      this.runFinished(run, event.timestamp);
    }
  }

  private runFinished(run: RunRecord, endedAt: string): void {
    const { provider, queue, state } = run;
    const backend = run.observability.backend;
    this.runsFinished.inc({ provider, backend, queue, state, error_kind: run.result?.error?.kind ?? 'none' });
    if (run.started_at) this.runDuration.observe({ provider, backend, state }, seconds(run.started_at, endedAt));
    const usage = run.result?.usage;
    if (usage) {
      this.tokens.inc({ provider, type: 'input' }, usage.input_tokens);
      this.tokens.inc({ provider, type: 'output' }, usage.output_tokens);
      this.tokens.inc({ provider, type: 'cache_read' }, usage.cache_read_input_tokens ?? 0);
      this.tokens.inc({ provider, type: 'cache_creation' }, usage.cache_creation_input_tokens ?? 0);
    }
    if (run.result?.cost_usd) this.cost.inc({ provider }, run.result.cost_usd);
  }

  private approvalResolved(provider: string, payload: Record<string, unknown>): void {
    const decision = String(payload.decision);
    const by = decidedBy(payload.reason);
    this.approvalsDecided.inc({ provider, decision, by });
    // The request time is in the approval's record, wherever it was requested.
    void this.app.store.approvals
      .get(String(payload.approval_id))
      .then((approval) => {
        if (approval?.resolved_at) this.approvalWait.observe({ decision, by }, seconds(approval.requested_at, approval.resolved_at));
      })
      .catch(() => undefined);
  }

  /** Sessions, readiness, and in distributed mode the Redis link and the live instances. */
  private processMetrics(): void {
    const { app } = this;
    const registers = [this.registry];
    new Gauge({
      name: 'asm_up',
      help: '1 while the server accepts work',
      registers,
      collect() {
        this.set(app.isReady() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'asm_sessions',
      help: 'Sessions held by the store',
      registers,
      async collect() {
        // While the store is away the scrape still answers (asm_redis_up says why), without this one.
        const count = await app.store.sessions.count().catch(() => undefined);
        if (count === undefined) this.reset();
        else this.set(count);
      },
    });
    if (app.mode !== 'distributed') return;
    new Gauge({
      name: 'asm_redis_up',
      help: '1 while this process reaches Redis (a PING answers)',
      registers,
      async collect() {
        this.set(await app.store.ping().then(() => 1, () => 0));
      },
    });
    new Gauge({
      name: 'asm_nodes',
      help: 'Instances of the deployment with a current heartbeat, by role',
      labelNames: ['role'],
      registers,
      async collect() {
        const nodes = await app.cluster.nodes().catch(() => []);
        for (const role of ['api', 'worker'] as const) this.set({ role }, nodes.filter((n) => n.role === role).length);
      },
    });
  }

  /** The lane engine's own figures, read at each scrape, under the names /metrics always had. */
  private laneMetrics(): void {
    const { app } = this;
    let snapshot: Promise<LaneMetrics[]> | undefined;
    // One engine read per scrape, shared by the lane families (the first family's collect starts it).
    const lanes = () => (snapshot ??= app.engine.metrics().catch(() => []).finally(() => setImmediate(() => (snapshot = undefined))));
    const registers = [this.registry];
    for (const [name, help, pick] of LANE_GAUGES) {
      new Gauge({
        name,
        help,
        labelNames: ['lane'],
        registers,
        async collect() {
          for (const m of await lanes()) this.set({ lane: m.id }, pick(m));
        },
      });
    }
    for (const [counter, pick] of LANE_COUNTERS) {
      new Counter({
        name: `asm_lane_commands_${counter}_total`,
        help: `Commands ${counter.replace('_', ' ')}`,
        labelNames: ['lane'],
        registers,
        async collect() {
          this.reset();
          for (const m of await lanes()) this.inc({ lane: m.id }, pick(m));
        },
      });
    }
    // The engine keeps its own latency quantiles (src/lanes/histogram.ts), so they are exposed as they are.
    this.registry.registerMetric({
      name: 'asm_lane_latency_ms',
      async get() {
        const values = (await lanes()).flatMap((m) =>
          (['p50', 'p90', 'p95', 'p99'] as const).map((q) => ({ labels: { lane: m.id, quantile: Number(q.slice(1)) / 100 }, value: m.latencyMs[q] })),
        );
        return { name: 'asm_lane_latency_ms', help: 'Command execution time', type: 'summary', values, aggregator: 'sum' };
      },
    } as unknown as Metric);
  }
}
