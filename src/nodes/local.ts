import { KeyedSerializer } from '../lanes/keyed-serializer.js';
import type { Cluster, ControlHandler, ControlReply, ControlRequest, NodeSnapshot, SelfReport } from './cluster.js';
import { OwnerUnreachable } from './cluster.js';

/** Embedded mode: a cluster of this one process. Locks are in-process and only `self` is alive. */
export class LocalCluster implements Cluster {
  readonly distributed = false;
  private readonly locks = new KeyedSerializer();
  private readonly claims = new Map<string, number>();
  private readonly startedAt = new Date().toISOString();
  private handler: ControlHandler | undefined;
  private state: NodeSnapshot['state'] = 'ready';

  constructor(
    readonly self: string,
    private readonly report: SelfReport,
  ) {}

  async start(handler: ControlHandler): Promise<void> {
    this.handler = handler;
  }

  async nodes(): Promise<NodeSnapshot[]> {
    const now = new Date().toISOString();
    return [{ id: this.self, ...this.report(), state: this.state, started_at: this.startedAt, last_heartbeat: now }];
  }

  async isAlive(id: string): Promise<boolean> {
    return id === this.self;
  }

  async send(id: string, request: ControlRequest): Promise<ControlReply> {
    if (id !== this.self || !this.handler) throw new OwnerUnreachable(id);
    return this.handler(request);
  }

  withLock<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.locks.run(key, work);
  }

  async lockHeld(key: string): Promise<boolean> {
    return this.locks.has(key);
  }

  async claim(key: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const until = this.claims.get(key);
    if (until !== undefined && until > now) return false;
    for (const [k, expiry] of this.claims) if (expiry <= now) this.claims.delete(k);
    this.claims.set(key, now + ttlMs);
    return true;
  }

  setState(state: NodeSnapshot['state']): void {
    this.state = state;
  }

  async announce(): Promise<void> {}

  heartbeatLapses(): number {
    return 0;
  }

  now(): number {
    return Date.now();
  }

  async close(): Promise<void> {
    this.handler = undefined;
  }
}
