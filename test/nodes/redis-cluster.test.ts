/**
 * The Redis cluster seam between API processes, on the private test redis-server: liveness by
 * heartbeat, control requests answered by their addressee, unreachable and silent owners, and locks
 * and claims that hold across instances. Each test uses its own key prefix.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { OwnerUnreachable, type ControlHandler } from '../../src/nodes/cluster.js';
import { RedisCluster } from '../../src/nodes/redis.js';
import { AsmError } from '../../src/errors/kinds.js';
import { waitFor } from '../helpers/wait.js';

const url = inject('asmTestRedisUrl');
const opened: Array<{ cluster: RedisCluster; connections: Redis[] }> = [];

function makeCluster(prefix: string, self: string, overrides: Partial<ConstructorParameters<typeof RedisCluster>[0]> = {}) {
  const connections = [new Redis(url), new Redis(url)];
  const cluster = new RedisCluster({
    self,
    redis: connections[0],
    subscriber: connections[1],
    prefix,
    report: () => ({ name: self, role: 'api', version: '0.1.0', node_version: process.versions.node, providers: ['shell'], missing_clis: [], capacity: 4, load: 0, pool: 'default', sandbox: 'bwrap' }),
    heartbeatMs: 100,
    ttlMs: 400,
    lockLeaseMs: 5_000,
    lockWaitMs: 2_000,
    ...overrides,
  });
  opened.push({ cluster, connections });
  return cluster;
}

const echo: ControlHandler = async (request) => ({ ok: true, value: { handledBy: request.kind } });

afterEach(async () => {
  for (const { cluster, connections } of opened.splice(0)) {
    await cluster.close();
    for (const c of connections) c.disconnect();
  }
});

describe('RedisCluster', () => {
  it('lists live instances and forgets one whose heartbeat stopped', async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const a = makeCluster(prefix, 'a');
    const b = makeCluster(prefix, 'b');
    await a.start(echo);
    await b.start(echo);
    expect((await a.nodes()).map((n) => n.id).sort()).toEqual(['a', 'b']);
    expect(await a.isAlive('b')).toBe(true);

    // b dies without deregistering: its connections drop, its key expires after ttlMs.
    const dead = opened.find((o) => o.cluster === b)!;
    for (const c of dead.connections) c.disconnect();
    (b as unknown as { heartbeat: NodeJS.Timeout }).heartbeat.close();
    await new Promise((r) => setTimeout(r, 600));
    expect(await a.isAlive('b')).toBe(false);
    expect((await a.nodes()).map((n) => n.id)).toEqual(['a']);
  });

  it('executes a control request on its addressee and brings back the reply', async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const a = makeCluster(prefix, 'a');
    const b = makeCluster(prefix, 'b');
    const seen: string[] = [];
    await a.start(echo);
    await b.start(async (request) => {
      seen.push(JSON.stringify(request));
      return request.kind === 'interrupt' ? { ok: true, value: 'stopped' } : { ok: false, error: new AsmError('conflict', 'already resolved').toBody() };
    });
    expect(await a.send('b', { kind: 'interrupt', runId: 'run_1' }, 1_000)).toEqual({ ok: true, value: 'stopped' });
    const refused = await a.send('b', { kind: 'decide', approvalId: 'apr_1', decision: 'allow', reason: null }, 1_000);
    expect(refused).toMatchObject({ ok: false, error: { kind: 'conflict' } });
    expect(seen).toHaveLength(2);
  });

  it('rejects at once for an instance nobody listens for, and with timeout for a silent one', async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const a = makeCluster(prefix, 'a');
    const b = makeCluster(prefix, 'b');
    await a.start(echo);
    await b.start(() => new Promise(() => {}));
    const started = Date.now();
    await expect(a.send('ghost', { kind: 'interrupt', runId: 'r' }, 5_000)).rejects.toBeInstanceOf(OwnerUnreachable);
    expect(Date.now() - started).toBeLessThan(1_000);
    await expect(a.send('b', { kind: 'interrupt', runId: 'r' }, 200)).rejects.toMatchObject({ kind: 'timeout' });
  });

  it('lets one holder at a time into a lock across instances, and one claimant per key', async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const a = makeCluster(prefix, 'a');
    const b = makeCluster(prefix, 'b');
    let inside = 0;
    let most = 0;
    const work = async () => {
      inside++;
      most = Math.max(most, inside);
      await new Promise((r) => setTimeout(r, 5));
      inside--;
    };
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).withLock('session:x', work)));
    expect(most).toBe(1);

    const claims = await Promise.all([a.claim('orphan:r', 1_000), b.claim('orphan:r', 1_000), a.claim('orphan:r', 1_000)]);
    expect(claims.filter(Boolean)).toHaveLength(1);
    expect(await b.claim('orphan:other', 1_000)).toBe(true);
  });

  it('tells whether a lock is held or waited for, by this instance or another', async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const a = makeCluster(prefix, 'a');
    const b = makeCluster(prefix, 'b');
    expect([await a.lockHeld('session:h'), await b.lockHeld('session:h')]).toEqual([false, false]);
    let release!: () => void;
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const held = a.withLock('session:h', () => (entered(), new Promise<void>((resolve) => (release = resolve))));
    await inside;
    expect([await a.lockHeld('session:h'), await b.lockHeld('session:h'), await b.lockHeld('session:other')]).toEqual([true, true, false]);
    // Another holder of this instance takes its turn; then the lock is free, for both.
    const next = a.withLock('session:h', async () => 'next');
    release();
    await held;
    expect(await next).toBe('next');
    await waitFor(async () => !(await b.lockHeld('session:h')) && !(await a.lockHeld('session:h')), 'the lock to be free', 5_000);
  });

  it("lets a process's own holders of a lock take turns in the process: each asks Redis once, however long the others hold it", async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    // Ten holders of 20 ms each wait 180 ms for the last turn, past the 50 ms a wait for Redis may take.
    const a = makeCluster(prefix, 'a', { lockWaitMs: 50 });
    const watcher = new Redis(url);
    const monitor = await watcher.monitor();
    const takes: string[] = [];
    let markerSeen!: () => void;
    const marker = new Promise<void>((resolve) => (markerSeen = resolve));
    monitor.on('monitor', (_time: string, argv: string[]) => {
      if (String(argv[0]).toLowerCase() === 'set' && argv[1] === `${prefix}:lock:{session:y}`) takes.push(argv[2]!);
      if (argv[1] === `${prefix}:marker`) markerSeen();
    });
    let inside = 0;
    let most = 0;
    const work = async (i: number) => {
      inside++;
      most = Math.max(most, inside);
      await new Promise((r) => setTimeout(r, 20));
      inside--;
      return i;
    };
    expect(await Promise.all(Array.from({ length: 10 }, (_, i) => a.withLock('session:y', () => work(i))))).toEqual([...Array(10).keys()]);
    expect(most).toBe(1);
    // MONITOR lists commands in the order Redis ran them: every SET ran before this GET.
    const other = new Redis(url);
    await other.get(`${prefix}:marker`);
    other.disconnect();
    await marker;
    expect(takes).toHaveLength(10);
    expect(new Set(takes).size).toBe(10);
    monitor.disconnect();
    watcher.disconnect();
  });

  it('fails a lock that is not freed in time with timeout, and releases a lock whose holder threw', async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const a = makeCluster(prefix, 'a', { lockWaitMs: 150 });
    const b = makeCluster(prefix, 'b', { lockWaitMs: 150 });
    await expect(a.withLock('k', async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(await b.withLock('k', async () => 'free')).toBe('free');
    let release!: () => void;
    const held = a.withLock('k', () => new Promise<void>((r) => (release = r)));
    await new Promise((r) => setTimeout(r, 20));
    await expect(b.withLock('k', async () => 'never')).rejects.toMatchObject({ kind: 'timeout' });
    release();
    await held;
  });

  it("keeps a lock whose holder works past the lease (it is renewed), and frees a dead holder's lock when its lease ends", async () => {
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    const a = makeCluster(prefix, 'a', { lockLeaseMs: 300, lockWaitMs: 200 });
    const b = makeCluster(prefix, 'b', { lockLeaseMs: 300, lockWaitMs: 2_000 });
    let release!: () => void;
    const held = a.withLock('k', () => new Promise<void>((r) => (release = r)));
    // Three leases on, the holder still holds it.
    await new Promise((r) => setTimeout(r, 900));
    await expect(makeCluster(prefix, 'c', { lockWaitMs: 200 }).withLock('k', async () => 'never')).rejects.toMatchObject({ kind: 'timeout' });
    release();
    await held;
    // A holder that died: its lock (taken, never renewed nor released) is free one lease later.
    const admin = new Redis(url);
    await admin.set(`${prefix}:lock:{k}`, 'a dead holder', 'PX', 300);
    admin.disconnect();
    const asked = Date.now();
    expect(await b.withLock('k', async () => 'taken')).toBe('taken');
    expect(Date.now() - asked).toBeLessThan(1_500);
  });
});
