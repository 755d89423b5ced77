import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { AsmError } from '../errors/kinds.js';
import type { Cluster } from '../nodes/cluster.js';
import { isTerminalRunState } from '../schemas/api.js';
import type { HoldingKind, Store } from '../store/types.js';
import type { TenantDirectory, TenantQuotas } from '../tenants.js';

/** A holding is taken before the record it names is written: one younger than this is never judged stale. */
const STALE_AFTER_MS = 60_000;
/** How often, at most, one tenant's holdings of one kind are checked for stale ones, deployment-wide. */
const PRUNE_EVERY_MS = 10_000;

/** Each holding quota: its field in the tenant's policy, what it counts, and what frees one. */
const HELD: Record<HoldingKind, { field: keyof TenantQuotas; counts: string; frees: string }> = {
  sessions: { field: 'sessions', counts: 'open sessions', frees: 'close one (DELETE /v1/sessions/{id})' },
  active_runs: { field: 'activeRuns', counts: 'active runs (running, or handed to a queue lane) across its sessions', frees: 'wait for one to end' },
  queued_runs: { field: 'queuedRuns', counts: 'runs waiting in its sessions\' queues', frees: 'wait for one to start' },
  connections: { field: 'connections', counts: 'WebSocket and SSE streams open', frees: 'close one' },
};

/** Where the operator raises a quota. */
function raiseWith(quota: string): string {
  return `raise "quotas.${quota}" for the tenant (or under "defaults") in ASM_TENANTS_FILE`;
}

export interface QuotasDeps {
  store: Store;
  cluster: Cluster;
  tenants: TenantDirectory;
  log: Logger;
}

/**
 * A tenant's quotas (src/tenants.ts `TenantQuotas`) as the layers apply them. What a tenant holds at
 * once (open sessions, runs in flight and waiting, event streams) is taken from the store's holdings
 * in one atomic step per request, so a quota holds across processes; beyond it the request is
 * refused with 429 quota_exceeded naming the quota. A holding a dead process left behind is found
 * when the tenant is refused, and released. Metadata is bounded by size (413).
 */
export class Quotas {
  constructor(private readonly deps: QuotasDeps) {}

  /** Hold `id` as one of the tenant's `kind`, or refuse with quota_exceeded. */
  async take(tenant: string, kind: HoldingKind, id: string): Promise<void> {
    const limit = this.deps.tenants.get(tenant).quotas[HELD[kind].field];
    const { holdings } = this.deps.store;
    if (await holdings.take(tenant, kind, id, limit)) return;
    if ((await this.releaseStale(tenant, kind)) && (await holdings.take(tenant, kind, id, limit))) return;
    const { counts, frees } = HELD[kind];
    // Retryable: the tenant's own sessions, runs and streams end, and then there is room again.
    throw new AsmError('quota_exceeded', `tenant ${tenant} is at its quota of ${limit} ${counts} ("${kind}"); ${frees}, or ${raiseWith(kind)}`, {
      retryable: true,
      details: { quota: kind, limit },
    });
  }

  /** Hold `id` whatever the limit: a run taking over the slot of a run that ended. */
  add(tenant: string, kind: HoldingKind, id: string): Promise<void> {
    return this.deps.store.holdings.add(tenant, kind, id);
  }

  /** The output one of the tenant's runs may produce: `serverLimit`, or the tenant's quota where lower. */
  runOutputLimit(tenant: string, serverLimit: number): number {
    return Math.min(serverLimit, this.deps.tenants.get(tenant).quotas.outputBytesPerRun);
  }

  release(tenant: string, kind: HoldingKind, id: string): Promise<void> {
    return this.deps.store.holdings.release(tenant, kind, id);
  }

  /**
   * Hold one of the tenant's event streams (WebSocket or SSE) until the returned function is called.
   * The holding names this process, so one left behind by a process that died is released.
   */
  async holdConnection(tenant: string): Promise<() => void> {
    const id = `${this.deps.cluster.self}/${randomUUID()}`;
    await this.take(tenant, 'connections', id);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.release(tenant, 'connections', id).catch((err) => this.deps.log.warn({ err, tenant }, 'could not release an event stream from its tenant quota'));
    };
  }

  /** Refuses metadata larger, as JSON, than the tenant's quota: 413 naming the field. */
  assertMetadata(tenant: string, metadata: Record<string, unknown> | undefined): void {
    if (metadata === undefined) return;
    const limit = this.deps.tenants.get(tenant).quotas.metadataBytes;
    const bytes = Buffer.byteLength(JSON.stringify(metadata));
    if (bytes <= limit) return;
    throw new AsmError('payload_too_large', `metadata: ${bytes} bytes of JSON, more than tenant ${tenant}'s quota of ${limit} ("metadata_bytes"); ${raiseWith('metadata_bytes')}`, {
      details: { field: 'metadata', quota: 'metadata_bytes', limit },
    });
  }

  /**
   * Release the tenant's holdings of `kind` whose owner is gone: a process that died between ending
   * a run (or closing a session, or dropping a stream) and releasing it. True when any was released.
   * At most one caller per tenant and kind looks within PRUNE_EVERY_MS, so a tenant refused over and
   * over does not make every refusal read all it holds.
   */
  private async releaseStale(tenant: string, kind: HoldingKind): Promise<boolean> {
    const { store, cluster } = this.deps;
    if (!(await cluster.claim(`quota-prune:${tenant}:${kind}`, PRUNE_EVERY_MS))) return false;
    const candidates = await store.holdings.takenBefore(tenant, kind, Date.now() - STALE_AFTER_MS);
    const stale = (await Promise.all(candidates.map(async (id) => ((await this.isStale(kind, id)) ? [id] : [])))).flat();
    await Promise.all(stale.map((id) => store.holdings.release(tenant, kind, id)));
    if (stale.length) this.deps.log.warn({ tenant, kind, released: stale.length }, 'released quota holdings left behind by processes that died');
    return stale.length > 0;
  }

  private async isStale(kind: HoldingKind, id: string): Promise<boolean> {
    const { store, cluster } = this.deps;
    switch (kind) {
      case 'sessions': {
        const session = await store.sessions.get(id);
        return !session || session.state === 'closed';
      }
      case 'active_runs':
      case 'queued_runs': {
        const run = await store.runs.get(id);
        return !run || isTerminalRunState(run.state) || (kind === 'queued_runs' && run.dispatched);
      }
      case 'connections':
        return !(await cluster.isAlive(id.slice(0, id.lastIndexOf('/'))));
    }
  }
}
