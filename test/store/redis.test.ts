/**
 * The Redis store against the shared store contract on the private redis-server of test/setup/redis.ts,
 * then what only Redis has: cluster slots, an unreachable server, ACL users and TLS. Each deployment
 * gets a unique key prefix, whose keys are deleted after the test.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { AsmError } from '../../src/errors/kinds.js';
import type { AsmEvent } from '../../src/schemas/events.js';
import { createRedisStore, type RedisStoreOptions } from '../../src/store/redis.js';
import { RedisEventLog } from '../../src/store/redis-events.js';
import { redisKeys, type ScriptRedis } from '../../src/store/redis-schema.js';
import type { Store } from '../../src/store/types.js';
import { newEvent, runRecord, sessionRecord, storeContract } from './contract.js';
import { startRedisServer, startTlsRedisServer, type RedisServer, type TlsRedisServer } from '../helpers/redis-server.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

const url = inject('asmTestRedisUrl') ?? process.env.ASM_TEST_REDIS_URL;
if (!url) throw new Error('no test Redis: is test/setup/redis.ts registered as globalSetup?');
const admin = new Redis(url, { maxRetriesPerRequest: null });
let prefixes: string[] = [];

afterEach(async () => {
  // Runs after the contract's own afterEach has closed the stores.
  for (const prefix of prefixes.splice(0)) {
    for await (const keys of admin.scanStream({ match: `${prefix}:*`, count: 1000 })) if (keys.length) await admin.del(...(keys as string[]));
  }
});

afterAll(async () => {
  await admin.quit();
});

function uniquePrefix(): string {
  const prefix = `asmtest-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  return prefix;
}

/** `test` with a store of its own (a fresh prefix) on the test Redis, closed after it. */
async function withStore(eventsPerSession: number, test: (store: Store, prefix: string) => Promise<void>): Promise<void> {
  const prefix = uniquePrefix();
  const store = await createRedisStore({ url, prefix, eventsPerSession });
  try {
    await test(store, prefix);
  } finally {
    await store.close();
  }
}

storeContract('redis', ({ eventsPerSession }) => {
  const prefix = uniquePrefix();
  return { open: () => createRedisStore({ url, prefix, eventsPerSession }) };
});

describe('Redis store: admission indexes', () => {
  it('drops an in-flight entry whose run has ended when recounting (a process died between the record and its index)', async () => {
    await withStore(10, async (store, prefix) => {
      const session = sessionRecord();
      const live = runRecord(session, { dispatched: true });
      const ended = runRecord(session, { dispatched: true });
      await store.sessions.create(session);
      await store.runs.create(live);
      await store.runs.create(ended);
      // The record says completed while the index still says in flight.
      await admin.hset(redisKeys(prefix).run(ended.id), 'state', JSON.stringify('completed'));
      expect((await store.admissionView(session.id))?.counts).toEqual({ inFlight: 2, waiting: 0 });
      expect(await store.runs.recountInFlight(session.id)).toEqual({ inFlight: 1, waiting: 0 });
      expect((await store.admissionView(session.id))?.counts).toEqual({ inFlight: 1, waiting: 0 });
    });
  });
});

describe('Redis store: a retried append', () => {
  it("keeps an append whose id is its run's last append's once (a reply lost with the connection), and the session's eviction takes the marks", async () => {
    await withStore(10, async (store, prefix) => {
      const session = sessionRecord();
      await store.sessions.create(session);
      const [one, other] = [runRecord(session), runRecord(session)];
      const first = await store.events.append(newEvent(one, { id: 'evt_first' }));
      // Another run of the session appends in between; the retry still finds its run's last append.
      const between = await store.events.append(newEvent(other, { id: 'evt_between' }));
      const retried = await store.events.append(newEvent(one, { id: 'evt_first' }));
      expect(retried).toMatchObject({ id: 'evt_first', seq: first.seq });
      const next = await store.events.append(newEvent(one, { id: 'evt_next' }));
      expect(next.seq).toBe(between.seq + 1);
      const stored = await store.events.read(session.id, { after: 0, limit: 10 });
      expect(stored.map((e) => [e.seq, e.id])).toEqual([
        [first.seq, 'evt_first'],
        [between.seq, 'evt_between'],
        [next.seq, 'evt_next'],
      ]);
      // Without a caller's id each append is a new event.
      const [a, b] = [await store.events.append(newEvent(one)), await store.events.append(newEvent(one))];
      expect(b.seq).toBe(a.seq + 1);
      await store.sessions.update(session.id, { state: 'closed', closed_at: new Date().toISOString() });
      expect(await store.evictOldestClosed()).toBe(session.id);
      expect(await admin.exists(redisKeys(prefix).lastAppended(session.id))).toBe(0);
    });
  });
});

describe('Redis store: events kept before their run id was', () => {
  it("picks a run's events out of stream entries that hold only the event's JSON, as entries added before the run's id was kept beside it do", async () => {
    await withStore(100, async (store, prefix) => {
      const session = sessionRecord();
      await store.sessions.create(session);
      const [one, other] = [runRecord(session), runRecord(session)];
      const kept = [await store.events.append(newEvent(one)), await store.events.append(newEvent(other)), await store.events.append(newEvent(one))];
      // The same events as the earlier script stored them: `e` only.
      const key = redisKeys(prefix).events(session.id);
      const entries = await admin.xrange(key, '-', '+');
      await admin.del(key);
      for (const [id, fields] of entries) {
        expect(fields).toEqual(['e', expect.any(String), 'r', expect.stringMatching(/^run_/)]);
        await admin.xadd(key, id, 'e', fields[1]);
      }
      expect(await store.events.read(session.id, { after: 0, runId: one.id, limit: 10 })).toEqual([kept[0], kept[2]]);
      const page = await store.events.readJson(session.id, { after: 0, runId: other.id, limit: 10 });
      expect([JSON.parse(Buffer.concat(page.json as Buffer[]).toString()), page.lastSeq]).toEqual([kept[1], kept[1].seq]);
    });
  });
});

describe('Redis store: a stalled connection', () => {
  it("reconnects a subscriber whose PING Redis's replies no longer answer, and its listener gets the events appended meanwhile, once each", async () => {
    const prefix = uniquePrefix();
    const redisUrl = new URL(url!);
    const proxy = await startTcpProxy({ host: redisUrl.hostname, port: Number(redisUrl.port) });
    const commandTimeoutMs = 300;
    // This process reaches Redis through the proxy; another one, which appends, directly.
    const here = await createRedisStore({ url: `redis://127.0.0.1:${proxy.port}`, prefix, eventsPerSession: 100, commandTimeoutMs });
    const elsewhere = await createRedisStore({ url, prefix, eventsPerSession: 100 });
    try {
      const session = sessionRecord();
      const run = runRecord(session);
      await elsewhere.sessions.create(session);
      const heard: AsmEvent[] = [];
      here.events.subscribe(session.id, (event) => heard.push(event));
      // Appended here, so it lies above the subscription's starting point (redis-events.ts).
      await here.events.append(newEvent(run, { id: 'evt_before' }));
      await waitFor(() => heard.length === 1, 'the first event');

      // What Redis sends on this process's connections no longer arrives (a healed partition's backoff).
      proxy.withholdReplies();
      const appendedAt = Date.now();
      await elsewhere.events.append(newEvent(run, { id: 'evt_during' }));
      await waitFor(() => heard.length === 2, 'the event appended while the subscriber was stalled', 10_000);
      // Two checks (a PING, its timeout), the reconnect and the catch-up read; slack for a loaded machine.
      expect(Date.now() - appendedAt).toBeLessThan(2 * commandTimeoutMs + 3_000);
      await elsewhere.events.append(newEvent(run, { id: 'evt_after' }));
      await waitFor(() => heard.length === 3, 'the event appended after the reconnect');
      expect(heard.map((event) => event.id)).toEqual(['evt_before', 'evt_during', 'evt_after']);
      // The request path's connection was reconnected too: calls are answered again.
      expect((await here.sessions.get(session.id))?.id).toBe(session.id);
    } finally {
      await Promise.all([here.close(), elsewhere.close()]);
      await proxy.close();
    }
  });
});

describe('Redis store: a subscription renewed while the command connection is down', () => {
  it('reads what the subscription missed once the command connection is back, without waiting for a live event', async () => {
    const prefix = uniquePrefix();
    // The event log on connections of its own, so each can be cut alone; the other process appends.
    const command = new Redis(url!, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    const subscriber = new Redis(url!, { autoResubscribe: false });
    const failedReads: string[] = [];
    const log = new RedisEventLog(command as ScriptRedis, subscriber, redisKeys(prefix), 100, (_err, message) => failedReads.push(message));
    const elsewhere = await createRedisStore({ url, prefix, eventsPerSession: 100 });
    try {
      await waitFor(() => command.status === 'ready' && subscriber.status === 'ready', 'both connections');
      const session = sessionRecord();
      const run = runRecord(session);
      await elsewhere.sessions.create(session);
      const heard: string[] = [];
      log.subscribe(session.id, (event) => heard.push(event.id));
      const channel = redisKeys(prefix).channel(session.id);
      await waitFor(async () => ((await admin.pubsub('NUMSUB', channel)) as [string, number])[1] === 1, 'the subscription');

      command.disconnect();
      subscriber.disconnect();
      await waitFor(() => command.status === 'end' && subscriber.status === 'end', 'both connections closed');
      await elsewhere.events.append(newEvent(run, { id: 'evt_missed' }));
      // The subscriber is back first: its renewal's catch-up read finds the command connection closed.
      subscriber.connect().catch(() => undefined);
      await waitFor(() => failedReads.length === 1, 'the failed catch-up read');
      expect(heard).toEqual([]);
      command.connect().catch(() => undefined);
      await waitFor(() => heard.length === 1, 'the missed event, read once the command connection is back');
      await elsewhere.events.append(newEvent(run, { id: 'evt_live' }));
      await waitFor(() => heard.length === 2, 'the next live event');
      expect(heard).toEqual(['evt_missed', 'evt_live']);
    } finally {
      log.stopAll();
      command.disconnect();
      subscriber.disconnect();
      await elsewhere.close();
    }
  });
});

describe('Redis store: a feed left by its last listener', () => {
  it('stays subscribed a moment for a listener that comes back (one subscription for both), then unsubscribes', async () => {
    const prefix = uniquePrefix();
    const keys = redisKeys(prefix);
    const command = new Redis(url!);
    const subscriber = new Redis(url!, { autoResubscribe: false });
    const lingerMs = 300;
    const log = new RedisEventLog(command as ScriptRedis, subscriber, keys, 100, () => undefined, lingerMs);
    const watcher = new Redis(url!);
    const monitor = await watcher.monitor();
    try {
      await waitFor(() => command.status === 'ready' && subscriber.status === 'ready', 'both connections');
      const session = sessionRecord();
      const channel = keys.channel(session.id);
      const subscribes: string[] = [];
      monitor.on('monitor', (_time: string, argv: string[]) => {
        const name = String(argv[0]).toLowerCase();
        if (argv[1] === channel && name.endsWith('subscribe')) subscribes.push(name);
      });
      const subscribed = () => admin.pubsub('NUMSUB', channel).then((reply) => (reply as [string, number])[1]);
      const first: string[] = [];
      const leave = log.subscribe(session.id, (event) => first.push(event.id));
      await waitFor(async () => (await subscribed()) === 1, 'the subscription');
      leave();
      // The next run's waiter, as a client that submits with wait: true one run after another.
      const second: string[] = [];
      const leaveAgain = log.subscribe(session.id, (event) => second.push(event.id));
      const store = await createRedisStore({ url, prefix, eventsPerSession: 100 });
      try {
        await store.events.append(newEvent(runRecord(session), { id: 'evt_after_return' }));
      } finally {
        await store.close();
      }
      await waitFor(() => second.length === 1, 'the live event, to the listener that came back');
      expect(second).toEqual(['evt_after_return']);
      expect(first).toEqual([]);
      const left = Date.now();
      leaveAgain();
      await waitFor(async () => (await subscribed()) === 0, 'the unsubscribe, once the feed lingered');
      expect(Date.now() - left).toBeGreaterThanOrEqual(lingerMs - 20);
      await waitFor(() => subscribes.includes('unsubscribe'), 'the unsubscribe in MONITOR');
      expect(subscribes).toEqual(['subscribe', 'unsubscribe']);
    } finally {
      log.stopAll();
      monitor.disconnect();
      watcher.disconnect();
      command.disconnect();
      subscriber.disconnect();
    }
  });
});

/** Redis Cluster's key slot: CRC16/XMODEM of the hash tag (or the whole key) modulo 16384. */
function clusterSlot(key: string): number {
  const open = key.indexOf('{');
  const close = open === -1 ? -1 : key.indexOf('}', open + 1);
  const hashed = close > open + 1 ? key.slice(open + 1, close) : key;
  let crc = 0;
  for (const byte of Buffer.from(hashed)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** A session, a live event from it and the session read back: the store works over this connection. */
async function roundTrip(store: Store): Promise<void> {
  const session = sessionRecord();
  await store.sessions.create(session);
  const seen: AsmEvent[] = [];
  store.events.subscribe(session.id, (event) => seen.push(event));
  await store.events.lastSeq(session.id);
  await store.events.append(newEvent(runRecord(session)));
  await waitFor(() => seen.length === 1, 'the live event');
  expect(await store.sessions.get(session.id)).toEqual({ ...session, last_seq: 1 });
}

/** The AsmError a call rejected with (failing the test if it resolved or threw something else). */
async function asmErrorOf(promise: Promise<unknown>): Promise<AsmError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AsmError);
  return err as AsmError;
}

describe('Redis store: cluster slots', () => {
  it('computes slots as Redis Cluster does', () => {
    expect(clusterSlot('123456789')).toBe(0x31c3);
    expect(clusterSlot('foo')).toBe(12182);
    expect(clusterSlot('{user1000}.following')).toBe(clusterSlot('{user1000}.followers'));
  });

  it('keeps the keys of every script and multi-key command in one slot', () => {
    const keys = redisKeys('asm');
    for (const [group, build] of Object.entries(keys.groups)) {
      for (const id of ['ses_0b6a5c1e-1111-4e4e-9a9a-000000000001', 'run_x', 'apr_y', 'toolu_01ABC']) {
        const slots = new Set(build(id).map(clusterSlot));
        expect(slots.size, `${group}(${id}): ${build(id).join(' ')}`).toBe(1);
      }
    }
  });

  describe('on a cluster-mode redis-server, which refuses cross-slot commands', () => {
    let server: RedisServer;
    beforeAll(async () => {
      server = await startRedisServer({ args: (port, dir) => [
        '--port', String(port), '--save', '', '--appendonly', 'no', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'),
      ] });
      const node = new Redis(server.port, '127.0.0.1');
      await node.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
      await waitFor(async () => String(await node.call('CLUSTER', 'INFO')).includes('cluster_state:ok'), 'cluster_state:ok');
      expect(await node.call('CLUSTER', 'KEYSLOT', 'asm:{ses_1}:events')).toBe(clusterSlot('asm:{ses_1}:events'));
      await node.quit();
    });
    afterAll(() => server.dispose());

    storeContract('redis (cluster mode)', ({ eventsPerSession }) => {
      const prefix = `asm-${randomUUID().slice(0, 8)}`;
      return { open: () => createRedisStore({ url: `redis://127.0.0.1:${server.port}`, prefix, eventsPerSession }) };
    });
  });
});

describe('Redis store: Redis unreachable', () => {
  let server: RedisServer;
  const stores: Store[] = [];
  beforeAll(async () => {
    server = await startRedisServer({ args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'] });
  });
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close()));
    await server.dispose();
  });

  it('fails fast with not_ready while Redis is down, then works again with its data and live events', async () => {
    const options: RedisStoreOptions = { url: `redis://127.0.0.1:${server.port}`, eventsPerSession: 100, commandTimeoutMs: 500, maxReconnectDelayMs: 100 };
    const [a, b] = [await createRedisStore(options), await createRedisStore(options)];
    stores.push(a, b);
    const session = sessionRecord();
    const run = runRecord(session);
    await a.sessions.create(session);
    const seen: AsmEvent[] = [];
    const everything: AsmEvent[] = [];
    a.events.subscribe(session.id, (event) => seen.push(event));
    a.events.subscribe(null, (event) => everything.push(event));
    await a.events.lastSeq(session.id);
    await b.events.append(newEvent(run));
    await waitFor(() => seen.length === 1 && everything.length === 1, 'the first event, live');

    await server.stop();
    for (const call of [() => a.sessions.get(session.id), () => b.events.append(newEvent(run)), () => a.ping()]) {
      const started = Date.now();
      const err = await asmErrorOf(call());
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(err.kind).toBe('not_ready');
      expect(err.httpStatus).toBe(503);
      expect(err.message).toMatch(/^Redis is unreachable: /);
    }

    await server.start();
    await waitFor(() => b.ping().then(() => true, () => false), 'b to reconnect');
    // Appended as soon as b is back, possibly before a's subscriber has resubscribed: a catches up.
    await b.events.append(newEvent(run));
    await waitFor(() => a.ping().then(() => true, () => false), 'a to reconnect');
    expect(await a.sessions.get(session.id)).toEqual({ ...session, last_seq: 2 });
    await waitFor(() => seen.length === 2, 'the event appended after the restart');
    expect(seen.map((e) => e.seq)).toEqual([1, 2]);
    // All-session listeners are live only; once resubscribed they carry new events again.
    let appended = 2;
    await waitFor(async () => {
      appended = (await b.events.append(newEvent(run))).seq;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return everything.length > 1;
    }, 'the all-sessions subscription to be renewed');
    await waitFor(() => seen.length === appended, 'the session listener to keep up');
    expect(seen.map((e) => e.seq)).toEqual(Array.from({ length: appended }, (_, i) => i + 1));
  });

  it('catches a subscriber up after its connection drops, across a trimmed gap', async () => {
    const prefix = uniquePrefix();
    const options: RedisStoreOptions = { url: url!, prefix, eventsPerSession: 5, maxReconnectDelayMs: 100 };
    const [a, b] = [await createRedisStore(options), await createRedisStore(options)];
    stores.push(a, b);
    const run = runRecord(sessionRecord());
    const seen: number[] = [];
    a.events.subscribe(run.session_id, (event) => seen.push(event.seq));
    await a.events.lastSeq(run.session_id);
    await b.events.append(newEvent(run));
    await waitFor(() => seen.length === 1, 'the first event');
    const clients = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'));
    const id = clients.split('\n').find((line) => line.includes(` name=${prefix}-events `))?.match(/^id=(\d+)/)?.[1];
    expect(id).toBeDefined();
    await admin.call('CLIENT', 'KILL', 'ID', id!);
    for (let i = 0; i < 20; i++) await b.events.append(newEvent(run));
    await waitFor(() => seen.at(-1) === 21, 'the events published while disconnected');
    await b.events.append(newEvent(run));
    await waitFor(() => seen.at(-1) === 22, 'live events after the reconnect');
    expect(seen).toEqual([...new Set(seen)].sort((x, y) => x - y));
    expect(seen.slice(-6)).toEqual([17, 18, 19, 20, 21, 22]);
  });

  it('refuses to start while Redis stays unreachable', async () => {
    const started = Date.now();
    const err = await asmErrorOf(createRedisStore({ url: 'redis://127.0.0.1:1', eventsPerSession: 10, startupTimeoutMs: 300 }));
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(err.kind).toBe('not_ready');
    expect(err.message).toMatch(/^Redis is unreachable: .*ECONNREFUSED/);
  });
});

describe('Redis store: its scripts', () => {
  it('loads a script with EVAL on a new connection, calls it by EVALSHA after, and loads it again once Redis has flushed it', async () => {
    // A private server: SCRIPT FLUSH on the shared one would change other files' command counts.
    const server = await startRedisServer();
    const store = await createRedisStore({ url: server.url, eventsPerSession: 10 });
    const [watcher, client] = [new Redis(server.url), new Redis(server.url)];
    const monitor = await watcher.monitor();
    const seen: string[] = [];
    monitor.on('monitor', (_time: string, argv: string[], source: string) => {
      if (source !== 'lua') seen.push(String(argv[0]).toLowerCase() === 'echo' ? `echo ${argv[1]}` : String(argv[0]).toLowerCase());
    });
    /** The store's script calls while `action` ran: MONITOR lists commands as Redis runs them, so all are in before an ECHO sent after it. */
    const scriptCalls = async (action: () => Promise<unknown>) => {
      await action();
      const marker = randomUUID();
      await client.echo(marker);
      await waitFor(() => seen.includes(`echo ${marker}`), 'the marker');
      return seen.splice(0).filter((command) => command.startsWith('eval'));
    };
    try {
      const session = sessionRecord();
      expect(await scriptCalls(() => store.sessions.create(session))).toContain('eval');
      let read: unknown;
      expect(await scriptCalls(async () => (read = await store.sessions.get(session.id)))).toEqual(['eval']); // its first call
      expect(read).toEqual(session);
      expect(await scriptCalls(async () => (read = await store.sessions.get(session.id)))).toEqual(['evalsha']);
      expect(read).toEqual(session);
      await client.script('FLUSH');
      expect(await scriptCalls(async () => (read = await store.sessions.get(session.id)))).toEqual(['evalsha', 'eval']); // NOSCRIPT, then loaded again
      expect(read).toEqual(session);
      expect(await scriptCalls(async () => (read = await store.sessions.get(session.id)))).toEqual(['evalsha']);
    } finally {
      monitor.disconnect();
      watcher.disconnect();
      client.disconnect();
      await store.close();
      await server.dispose();
    }
  });
});

describe('Redis store: ACL users', () => {
  const users: string[] = [];
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close()));
    if (users.length) await admin.call('ACL', 'DELUSER', ...users);
  });

  async function user(...rules: string[]): Promise<{ name: string; url: string; prefix: string }> {
    const name = `asm-${randomUUID().slice(0, 8)}`;
    const prefix = uniquePrefix();
    users.push(name);
    await admin.call('ACL', 'SETUSER', name, 'on', '>s3cret pw', `~${prefix}:*`, `&${prefix}:*`, ...rules);
    const { host } = new URL(url!);
    return { name, prefix, url: `redis://${name}:${encodeURIComponent('s3cret pw')}@${host}` };
  }

  it('works as a user limited to its key prefix', async () => {
    const { url: userUrl, prefix } = await user('+@all');
    const store = await createRedisStore({ url: userUrl, prefix, eventsPerSession: 10 });
    stores.push(store);
    await roundTrip(store);
  });

  it('says clearly when the user lacks a permission or the password is wrong', async () => {
    // A user that may read and run scripts (a record is read by one, asmGet), but write nothing.
    const limited = await user('-@all', '+@connection', '+info', '+@read', '+@scripting');
    const store = await createRedisStore({ url: limited.url, prefix: limited.prefix, eventsPerSession: 10 });
    stores.push(store);
    expect(await store.sessions.get('ses_none')).toBeUndefined();
    // Refused as a command of its own, and inside a script (a session's create starts with one, asmAddBelow).
    const refused = await asmErrorOf(store.holdings.release('t', 'sessions', 'ses_none'));
    expect(refused.kind).toBe('not_ready');
    expect(refused.message).toMatch(/^Redis refused access: NOPERM .*check the ACL user's permissions/);
    const refusedInScript = await asmErrorOf(store.sessions.create(sessionRecord()));
    expect(refusedInScript.kind).toBe('not_ready');
    expect(refusedInScript.message).toMatch(/^Redis refused access: ERR The user executing the script can't run this command.*check the ACL user's permissions/);

    const wrong = await asmErrorOf(createRedisStore({ url: limited.url.replace('s3cret', 'wrong'), eventsPerSession: 10 }));
    expect(wrong.kind).toBe('not_ready');
    expect(wrong.message).toMatch(/WRONGPASS/);
  });
});

describe('Redis store: TLS (rediss://)', () => {
  let tls: TlsRedisServer;
  beforeAll(async () => {
    tls = await startTlsRedisServer();
  });
  afterAll(() => tls.dispose());

  it('connects with the CA file, and refuses a server it cannot verify', async (context) => {
    if (!tls.server) return context.skip(tls.missing);
    const tlsUrl = `rediss://127.0.0.1:${tls.server.port}`;
    const store = await createRedisStore({ url: tlsUrl, tlsCaFile: tls.ca, prefix: `asm-${randomUUID().slice(0, 8)}`, eventsPerSession: 10 });
    try {
      await roundTrip(store);
    } finally {
      await store.close();
    }
    // Refused at the first handshake, within the default 10 s start-up wait: the cause is the TLS error, not the wait's end.
    const untrusted = await asmErrorOf(createRedisStore({ url: tlsUrl, eventsPerSession: 10 }));
    expect(untrusted).toMatchObject({ kind: 'not_ready', cause: { code: 'SELF_SIGNED_CERT_IN_CHAIN' } });
    expect(untrusted.message).toMatch(/^Redis's TLS certificate is not trusted: .*certificate.*ASM_REDIS_TLS_CA/);
  });

  it('refuses, at once, a certificate signed by the CA given that does not name the host of the URL', async (context) => {
    if (!tls.server) return context.skip(tls.missing);
    // The server's certificate names 127.0.0.1 only.
    const misnamed = await asmErrorOf(createRedisStore({ url: `rediss://localhost:${tls.server.port}`, tlsCaFile: tls.ca, eventsPerSession: 10 }));
    expect(misnamed).toMatchObject({ kind: 'not_ready', cause: { code: 'ERR_TLS_CERT_ALTNAME_INVALID' } });
    expect(misnamed.message).toMatch(/^Redis's TLS certificate is not trusted: .*localhost/);
  });
});
