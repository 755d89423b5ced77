import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { AsmError } from '../errors/kinds.js';
import { KeyedSerializer } from '../lanes/keyed-serializer.js';
import type { Cluster, ControlHandler, ControlReply, ControlRequest, NodeSnapshot, SelfReport } from './cluster.js';
import { OwnerUnreachable } from './cluster.js';

export interface RedisClusterOptions {
  self: string;
  /** Commands: heartbeats, locks, claims, publishing. */
  redis: Redis;
  /** A connection this cluster may put in subscriber mode. */
  subscriber: Redis;
  prefix: string;
  report: SelfReport;
  heartbeatMs: number;
  /** A node whose heartbeat is older than this is lost. */
  ttlMs: number;
  /** A lock's lease, renewed while its holder works: how long a holder that died keeps it. */
  lockLeaseMs: number;
  /** Longest withLock waits for a lock before failing with `timeout`. */
  lockWaitMs: number;
  /** The state of the first heartbeat: a worker registers as `starting` and turns `ready` once it takes runs. */
  initialState?: NodeSnapshot['state'];
}

/** Releases a lock only if this holder still owns it (its lease may have expired and moved on). */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;

interface Envelope {
  t: 'req' | 'rep';
  id: string;
  from: string;
  request?: ControlRequest;
  reply?: ControlReply;
}

/**
 * Distributed mode: instances find each other through Redis.
 *
 * - Liveness: each instance refreshes `<prefix>:node:{<id>}` (its snapshot, expiring after ttlMs)
 *   every heartbeatMs and is listed in `<prefix>:nodes`; a missing key means the instance is lost.
 *   Redis expires the key, so no process's clock enters it. (`last_heartbeat` and `started_at` in a
 *   snapshot are the instance's own clock, for people to read, and compared with nothing.)
 * - Clock: each heartbeat reads Redis's TIME too, and now() is this process's clock moved by the
 *   offset it found, so every instance reads deadlines on one clock however far its own is off.
 * - Control: each instance subscribes to `<prefix>:ctl:<id>`. A request is published there and the
 *   reply comes back on the sender's channel. PUBLISH answers how many subscribers got the message,
 *   so an owner that is gone is known at once (OwnerUnreachable) rather than after a timeout.
 * - Locks and claims: SET NX PX keys, each with its own hash tag, so every command touches one slot.
 */
export class RedisCluster implements Cluster {
  readonly distributed = true;
  readonly self: string;
  private readonly redis: Redis;
  private readonly subscriber: Redis;
  private readonly options: RedisClusterOptions;
  private readonly startedAt = new Date().toISOString();
  private readonly waiting = new Map<string, { resolve: (reply: ControlReply) => void; timer: NodeJS.Timeout }>();
  private handler: ControlHandler | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** When a heartbeat last reached Redis, and how many lapses ended since start. */
  private lastBeatAt: number | undefined;
  private pastLapses = 0;
  /**
   * Since when this instance's own heartbeats have reached Redis without a miss; undefined while the
   * link is down. Before the first miss it is -Infinity: a process that starts sees Redis as it is.
   */
  private linkUpSince: number | undefined = -Infinity;
  private state: NodeSnapshot['state'];
  private closed = false;
  /** Redis's clock minus this process's, as of the last heartbeat (now()). */
  private clockOffsetMs = 0;
  /** This process's holders of each lock, one at a time: only the first asks Redis (see withLock). */
  private readonly localTurns = new KeyedSerializer();

  constructor(options: RedisClusterOptions) {
    this.options = options;
    this.state = options.initialState ?? 'ready';
    this.self = options.self;
    this.redis = options.redis;
    this.subscriber = options.subscriber;
  }

  private nodeKey(id: string): string {
    return `${this.options.prefix}:node:{${id}}`;
  }

  private get indexKey(): string {
    return `${this.options.prefix}:nodes`;
  }

  private channel(id: string): string {
    return `${this.options.prefix}:ctl:${id}`;
  }

  async start(handler: ControlHandler): Promise<void> {
    this.handler = handler;
    this.subscriber.on('message', (channel: string, raw: string) => {
      if (channel === this.channel(this.self)) void this.onMessage(raw);
    });
    await this.subscriber.subscribe(this.channel(this.self));
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat().catch(() => undefined), this.options.heartbeatMs);
    this.heartbeat.unref();
  }

  private async beat(): Promise<void> {
    const snapshot: NodeSnapshot = {
      id: this.self,
      ...this.options.report(),
      state: this.state,
      started_at: this.startedAt,
      last_heartbeat: new Date().toISOString(),
    };
    let replies: Array<[Error | null, unknown]> | null;
    try {
      replies = await this.redis.multi().set(this.nodeKey(this.self), JSON.stringify(snapshot), 'PX', this.options.ttlMs).sadd(this.indexKey, this.self).time().exec();
    } catch (err) {
      this.linkUpSince = undefined;
      throw err;
    }
    // Redis read its TIME at some instant before the reply came back: taking the reply's arrival as
    // that instant puts now() behind Redis's clock by at most the round trip (a few ms), whatever
    // this process's own clock says.
    const [seconds, micros] = replies?.[2]?.[1] as [string, string];
    this.clockOffsetMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Date.now();
    if (this.lapsed()) {
      this.pastLapses++;
      this.linkUpSince = undefined;
    }
    this.linkUpSince ??= Date.now();
    this.lastBeatAt = Date.now();
  }

  heartbeatLapses(): number {
    return this.pastLapses + (this.lapsed() ? 1 : 0);
  }

  now(): number {
    return Date.now() + this.clockOffsetMs;
  }

  /** A beat is one heartbeat period late at most before its key could expire: past that, count a lapse. */
  private lapsed(): boolean {
    return this.lastBeatAt !== undefined && Date.now() - this.lastBeatAt > this.options.ttlMs - this.options.heartbeatMs;
  }

  async nodes(): Promise<NodeSnapshot[]> {
    const ids = await this.redis.smembers(this.indexKey);
    if (ids.length === 0) return [];
    const raws = await Promise.all(ids.map((id) => this.redis.get(this.nodeKey(id))));
    const lost = ids.filter((_, i) => raws[i] === null);
    // Forget instances whose heartbeat expired: the index must not grow with every restart.
    if (lost.length) await this.redis.srem(this.indexKey, ...lost);
    return raws.flatMap((raw) => (raw === null ? [] : [JSON.parse(raw) as NodeSnapshot])).sort((a, b) => a.started_at.localeCompare(b.started_at));
  }

  /**
   * A missing key says an instance is lost only once this instance's own link to Redis has been up
   * for a whole TTL: after an outage (or a partition of this instance) every live instance's key may
   * have expired meanwhile, and each needs a TTL to heartbeat again (issue 13, finding 4). Until then
   * the instance counts as alive; one really gone is found lost a TTL after the link came back.
   */
  async isAlive(id: string): Promise<boolean> {
    if (id === this.self) return !this.closed;
    if ((await this.redis.exists(this.nodeKey(id))) === 1) return true;
    return this.linkUpSince === undefined || Date.now() - this.linkUpSince < this.options.ttlMs;
  }

  async send(id: string, request: ControlRequest, timeoutMs: number): Promise<ControlReply> {
    const envelope: Envelope = { t: 'req', id: randomUUID(), from: this.self, request };
    return new Promise<ControlReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(envelope.id);
        reject(new AsmError('timeout', `node instance ${id} did not answer a ${request.kind} request within ${timeoutMs} ms`, { details: { node: id } }));
      }, timeoutMs);
      this.waiting.set(envelope.id, { resolve, timer });
      this.redis.publish(this.channel(id), JSON.stringify(envelope)).then(
        (receivers) => {
          if (receivers > 0) return;
          clearTimeout(timer);
          this.waiting.delete(envelope.id);
          reject(new OwnerUnreachable(id));
        },
        (err) => {
          clearTimeout(timer);
          this.waiting.delete(envelope.id);
          reject(err);
        },
      );
    });
  }

  private async onMessage(raw: string): Promise<void> {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(raw) as Envelope;
    } catch {
      return; // not ours: the channel is only written by this class
    }
    if (envelope.t === 'rep') {
      const waiter = this.waiting.get(envelope.id);
      if (!waiter || !envelope.reply) return;
      clearTimeout(waiter.timer);
      this.waiting.delete(envelope.id);
      waiter.resolve(envelope.reply);
      return;
    }
    if (!this.handler || !envelope.request) return;
    let reply: ControlReply;
    try {
      reply = await this.handler(envelope.request);
    } catch (err) {
      reply = { ok: false, error: AsmError.from(err).toBody() };
    }
    const answer: Envelope = { t: 'rep', id: envelope.id, from: this.self, reply };
    await this.redis.publish(this.channel(envelope.from), JSON.stringify(answer)).catch(() => undefined);
  }

  /**
   * This process's holders of a lock take turns in the process first, as embedded mode's do
   * (nodes/local.ts), and only the one whose turn it is asks Redis: otherwise they poll Redis against
   * each other. A run's end and the next submit of its session did, in 96 of 100 runs one after
   * another, and the submit waited out a 2 ms pause each time (bench/RESULTS.md, twenty-second pass).
   * So a wait for the process's own holders has no bound but theirs, as in embedded mode; the wait
   * for other processes' is bounded by lockWaitMs.
   */
  withLock<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.localTurns.run(key, () => this.withRedisLock(key, work));
  }

  async lockHeld(key: string): Promise<boolean> {
    return this.localTurns.has(key) || (await this.redis.exists(this.lockKey(key))) === 1;
  }

  private lockKey(key: string): string {
    return `${this.options.prefix}:lock:{${key}}`;
  }

  private async withRedisLock<T>(key: string, work: () => Promise<T>): Promise<T> {
    const lockKey = this.lockKey(key);
    const token = randomUUID();
    const deadline = Date.now() + this.options.lockWaitMs;
    let pause = 2;
    const take = () =>
      this.redis.set(lockKey, token, 'PX', this.options.lockLeaseMs, 'NX').catch((err: unknown) => {
        // Redis may have taken it and lost only the answer (it went away meanwhile): let it go too.
        void this.release(lockKey, token, Date.now() + this.options.lockLeaseMs);
        throw err;
      });
    while ((await take()) !== 'OK') {
      if (Date.now() >= deadline) throw new AsmError('timeout', `lock ${key} was not free within ${this.options.lockWaitMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 50);
    }
    // The lease is renewed while the work runs, so it can be short: a holder that dies (a SIGKILLed
    // worker ending a run) frees its session within one lease, not a long one.
    const { lockLeaseMs } = this.options;
    const renewal = setInterval(() => void this.redis.eval(RENEW, 1, lockKey, token, lockLeaseMs).catch(() => undefined), lockLeaseMs / 3);
    try {
      return await work();
    } finally {
      clearInterval(renewal);
      // Not awaited: the holder's caller need not wait a round trip for it, and this process's next
      // holder's SET goes out on the same connection after it, so Redis frees the lock first.
      void this.release(lockKey, token, Date.now() + lockLeaseMs);
    }
  }

  /**
   * A release that cannot reach Redis is tried again until the lease would have ended: otherwise a
   * lock held when Redis went away (and kept by its append-only file) blocks its session for the rest
   * of the lease after Redis is back (found by redis-aof-restart.test.ts). Releasing a token that
   * never took the lock deletes nothing.
   */
  private async release(lockKey: string, token: string, leaseEnd: number): Promise<void> {
    const once = () => this.redis.eval(RELEASE, 1, lockKey, token).then(() => true, () => false);
    if (await once()) return;
    void (async () => {
      for (let pause = 50; Date.now() + pause < leaseEnd && !this.closed; pause = Math.min(pause * 2, 1_000)) {
        await new Promise((resolve) => setTimeout(resolve, pause).unref());
        if (await once()) return;
      }
    })();
  }

  async claim(key: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(`${this.options.prefix}:claim:{${key}}`, this.self, 'PX', ttlMs, 'NX')) === 'OK';
  }

  setState(state: NodeSnapshot['state']): void {
    this.state = state;
    void this.beat().catch(() => undefined);
  }

  async announce(): Promise<void> {
    await this.beat();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    for (const { timer } of this.waiting.values()) clearTimeout(timer);
    this.waiting.clear();
    this.handler = undefined;
    await this.redis.multi().del(this.nodeKey(this.self)).srem(this.indexKey, this.self).exec().catch(() => undefined);
  }
}
