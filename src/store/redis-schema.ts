import { createHash } from 'node:crypto';
import type { Redis, RedisValue } from 'ioredis';

/**
 * Distributed mode's store: several API processes share one Redis, and any of them may be SIGKILLed at
 * any moment, so everything lives in Redis and no process holds state another one needs.
 *
 * Key layout (prefix `asm` by default; `{…}` is the Redis Cluster hash tag):
 *
 *   asm:{ses_…}:session            hash   the session record, one field per top-level property (JSON)
 *   asm:{ses_…}:seq                string the session's last seq (INCR)
 *   asm:{ses_…}:events             stream the events, entry id `<seq>-0`, trimmed to eventsPerSession
 *   asm:{ses_…}:appended           hash   run id → the id and seq of the run's last event (a retried append is kept once)
 *   asm:{ses_…}:runs               list   run ids in creation order
 *   asm:{ses_…}:waiting            zset   ids of its runs waiting for admission, by position in :runs
 *   asm:{ses_…}:inflight           set    ids of its runs in flight (admission-slots.ts)
 *   asm:{ses_…}:approvals          set    every approval id of the session (for eviction)
 *   asm:{ses_…}:pending            set    pending approval ids of the session
 *   asm:{run_…}:run                hash   the run record
 *   asm:{run_…}:pending            set    pending approval ids of the run
 *   asm:{run_…}:diff               string the run's workspace diff (JSON), bounded by ASM_DIFF_MAX_BYTES
 *   asm:{ses_…}:diff               string the session's workspace diff since its first run
 *   asm:{<approval id>}:approval   hash   the approval record
 *   asm:sessions                   set    every session id (the count ASM_MAX_SESSIONS bounds)
 *   asm:tenant:<tenant>:sessions   zset   the tenant's session ids by created_at
 *   asm:sessions:closed            zset   closed session ids by closed_at (eviction, oldest first)
 *   asm:runs:unfinished            set    ids of runs queued or running (orphan sweep)
 *   asm:approvals:expiry           zset   pending approval ids by expires_at (timeout sweep)
 *   asm:tenant:<tenant>:held:<kind> zset  what the tenant holds against a quota, by the time taken
 *   channel asm:events:<ses_…>     the session's live events, published by the append script
 *
 * Why it is shaped this way:
 * - Records are hashes of JSON fields, not one JSON string: an update is an HSET of the patched fields
 *   inside a script that first checks the record exists, so concurrent updates of different fields
 *   from different processes never lose each other, a deleted record is never resurrected, and values
 *   round-trip exactly (Lua never parses them, so cjson cannot turn [] into {}).
 * - Yet a record crosses the connection as one string each way: the fields are sent joined by
 *   newlines (RECORD_FIELDS) and read back as one JSON object the script concatenates (RECORD_JSON),
 *   since ioredis spends most of a record's cost on a string per field and value.
 * - Every script or multi-key command touches keys of one hash tag only (redisKeys().groups lists
 *   them; a test checks they share a slot), so the store runs on Redis Cluster. Indexes span sessions
 *   and so live in other slots; they are maintained by separate single-key commands, written before
 *   the record they point at. A crash between the two leaves an index entry without a record, or a
 *   stale entry; readers treat indexes as hints, check the record, and remove what is stale.
 * - One script assigns seq (INCR), adds the stream entry with id `<seq>-0`, stamps the session's
 *   last_seq and PUBLISHes: seq is gap-free across processes, a read after a cursor is an XRANGE
 *   from `<cursor+1>`, and publication order is seq order, so each subscriber connection receives a
 *   session's events in seq order. The session's last_seq is thereby current in every process (the
 *   memory store leaves it to the service, which sets it at close).
 * - Pub/sub loses what is published while a subscriber is disconnected or not yet subscribed. So each
 *   subscribed session is followed with a cursor (catch-up.ts): on (re)subscription and on any seq gap
 *   the missing events are read from the stream, and a listener never misses an event appended after
 *   subscribe().
 *   All-session listeners (live only, by contract) are not caught up.
 * - While Redis is unreachable calls fail at once (no offline queue, a command timeout, no replay of
 *   in-flight commands after a reconnect, which could append an event twice) with not_ready, i.e.
 *   HTTP 503; the connections keep reconnecting and the store works again without a restart. A call
 *   that timed out may still have taken effect.
 */


export type RedisKeys = ReturnType<typeof redisKeys>;

export function redisKeys(prefix: string) {
  const tagged = (id: string, what: string) => `${prefix}:{${id}}:${what}`;
  const keys = {
    prefix,
    session: (id: string) => tagged(id, 'session'),
    seq: (sessionId: string) => tagged(sessionId, 'seq'),
    events: (sessionId: string) => tagged(sessionId, 'events'),
    lastAppended: (sessionId: string) => tagged(sessionId, 'appended'),
    sessionRuns: (sessionId: string) => tagged(sessionId, 'runs'),
    sessionWaiting: (sessionId: string) => tagged(sessionId, 'waiting'),
    sessionInFlight: (sessionId: string) => tagged(sessionId, 'inflight'),
    sessionApprovals: (sessionId: string) => tagged(sessionId, 'approvals'),
    sessionPending: (sessionId: string) => tagged(sessionId, 'pending'),
    run: (id: string) => tagged(id, 'run'),
    runPending: (runId: string) => tagged(runId, 'pending'),
    approval: (id: string) => tagged(id, 'approval'),
    diff: (id: string) => tagged(id, 'diff'),
    sessions: `${prefix}:sessions`,
    tenantSessions: (tenant: string) => `${prefix}:tenant:${tenant}:sessions`,
    closedSessions: `${prefix}:sessions:closed`,
    unfinishedRuns: `${prefix}:runs:unfinished`,
    ownedRuns: `${prefix}:runs:owned`,
    approvalExpiry: `${prefix}:approvals:expiry`,
    holdings: (tenant: string, kind: string) => `${prefix}:tenant:${tenant}:held:${kind}`,
    channel: (sessionId: string) => `${prefix}:events:${sessionId}`,
    allChannels: `${prefix.replace(/[*?[\]\\]/g, '\\$&')}:events:*`,
  };
  return {
    ...keys,
    /** The keys of each script or command that touches several keys; each group must share one cluster slot. */
    groups: {
      append: (sessionId: string) => [keys.seq(sessionId), keys.events(sessionId), keys.session(sessionId), keys.lastAppended(sessionId)],
      sessionOwned: (sessionId: string) => [
        keys.session(sessionId),
        keys.seq(sessionId),
        keys.events(sessionId),
        keys.lastAppended(sessionId),
        keys.sessionRuns(sessionId),
        keys.sessionWaiting(sessionId),
        keys.sessionInFlight(sessionId),
        keys.sessionApprovals(sessionId),
        keys.sessionPending(sessionId),
        keys.diff(sessionId),
      ],
      runOwned: (runId: string) => [keys.run(runId), keys.runPending(runId), keys.diff(runId)],
      runSlots: (sessionId: string) => [keys.sessionRuns(sessionId), keys.sessionWaiting(sessionId), keys.sessionInFlight(sessionId)],
      admission: (sessionId: string) => [keys.session(sessionId), keys.sessionInFlight(sessionId), keys.sessionWaiting(sessionId), keys.seq(sessionId)] as const,
    },
  };
}

/**
 * Lua: the record at `key` as the text of one JSON object, or false when there is none. Its fields'
 * values are JSON already and its field names the record's own property names (encode), never a
 * caller's, so the object is their concatenation. One reply instead of a string per field and
 * value: a run record's read took 36–55 µs of the client's CPU with HGETALL, 20–32 this way
 * (`bench -- redis-records`; bench/RESULTS.md, thirteenth pass).
 */
const RECORD_JSON = `local function recordJson(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return false end
  local parts = {}
  for i = 1, #flat, 2 do parts[#parts + 1] = '"' .. flat[i] .. '":' .. flat[i + 1] end
  return '{' .. table.concat(parts, ',') .. '}'
end
`;

/**
 * Lua: the field/value arguments for HSET from encode's one string (fields and values joined by
 * newlines, which JSON text never holds unescaped). One argument for ioredis to send instead of two a
 * field: with RECORD_JSON, a run record's update (which answers the merged record) took 40–57 µs of
 * the client's CPU before, 27–34 so (`bench -- redis-records`; bench/RESULTS.md, thirteenth pass).
 */
const RECORD_FIELDS = `local function recordFields(text)
  local fields, from = {}, 1
  while true do
    local at = string.find(text, '\\n', from, true)
    if not at then
      fields[#fields + 1] = string.sub(text, from)
      return fields
    end
    fields[#fields + 1] = string.sub(text, from, at - 1)
    from = at + 1
  end
end
`;

/** Lua scripts, each on the keys of one hash tag. Record field values are opaque JSON strings to Lua. */
export const SCRIPTS = {
  /** A record as JSON (RECORD_JSON); nil when there is none. */
  asmGet: {
    numberOfKeys: 1,
    lua: `${RECORD_JSON}return recordJson(KEYS[1])`,
  },
  /**
   * KEYS: a session's record, inflight, waiting and seq. What admission reads of it (Store.admissionView)
   * in one step: {the record as JSON (RECORD_JSON), runs in flight, runs waiting, last seq}, or nil
   * when there is no session. Four commands a submit and three a run's end were sent apart before.
   */
  asmAdmission: {
    numberOfKeys: 4,
    lua: `${RECORD_JSON}local session = recordJson(KEYS[1])
if not session then return false end
return {session, redis.call('SCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]), tonumber(redis.call('GET', KEYS[4]) or '0')}`,
  },
  /** Replace a record with ARGV[1], its encoded fields (encode). */
  asmPut: {
    numberOfKeys: 1,
    lua: `${RECORD_FIELDS}redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(recordFields(ARGV[1])))
return 1`,
  },
  /** Merge ARGV[1], encoded top-level fields (or none: ''), into an existing record and return it as JSON (RECORD_JSON); nil when there is none. */
  asmPatch: {
    numberOfKeys: 1,
    lua: `${RECORD_JSON}${RECORD_FIELDS}if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], unpack(recordFields(ARGV[1]))) end
return recordJson(KEYS[1])`,
  },
  /**
   * ARGV: the encoded queued state and the encoded owner. Takes the run for the owner where it is
   * queued, owned by no process and not a remote_node run (`options.remote`, which its worker takes
   * as it accepts it): {1, record JSON} when this call took it, {0, record JSON} when not; nil when
   * there is no run (RunStore.claimLocal).
   */
  asmClaimLocal: {
    numberOfKeys: 1,
    lua: `${RECORD_JSON}local state, owner, options = unpack(redis.call('HMGET', KEYS[1], 'state', 'owner', 'options'))
if not state then return false end
local remote = options and cjson.decode(options).remote
if state ~= ARGV[1] or owner ~= 'null' or (remote ~= nil and remote ~= cjson.null and remote ~= false) then return {0, recordJson(KEYS[1])} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return {1, recordJson(KEYS[1])}`,
  },
  /** ARGV[1] is the encoded pending state, ARGV[2] the resolution's encoded fields: {1, record JSON} when this call resolved it, {0, record JSON} when it was not pending. */
  asmResolve: {
    numberOfKeys: 1,
    lua: `${RECORD_JSON}${RECORD_FIELDS}local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= ARGV[1] then return {0, recordJson(KEYS[1])} end
redis.call('HSET', KEYS[1], unpack(recordFields(ARGV[2])))
return {1, recordJson(KEYS[1])}`,
  },
  /**
   * KEYS: seq, events, session, appended. ARGV: maxlen, channel, the event's JSON without seq (an
   * object with fields), its run id and its id. Returns the seq. The stream entry keeps the JSON with
   * its seq (`e`) and the run's id (`r`), so a run's events are picked out without parsing them.
   * An append whose id is that of its run's last append is a retry whose first reply was lost (Redis
   * applied it and the connection dropped): it returns that append's seq and stores nothing
   * (test/faults/redis-aof-restart.test.ts found a run with two terminal events so). A run's appends
   * are serialised, so its last one is the only one a retry can repeat.
   */
  asmAppend: {
    numberOfKeys: 4,
    lua: `local last = redis.call('HGET', KEYS[4], ARGV[4])
local mark = ARGV[5] .. ' '
if last and string.sub(last, 1, #mark) == mark then return tonumber(string.sub(last, #mark + 1)) end
local seq = redis.call('INCR', KEYS[1])
local digits = string.format('%d', seq)
local json = '{"seq":' .. digits .. ',' .. string.sub(ARGV[3], 2)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], digits .. '-0', 'e', json, 'r', ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'last_seq', digits) end
redis.call('HSET', KEYS[4], ARGV[4], mark .. digits)
redis.call('PUBLISH', ARGV[2], json)
return seq`,
  },
  /**
   * KEYS: the session's runs, waiting and inflight. ARGV: the run's id, its admission slot, and
   * whether it is new (1: appended to the runs list, a waiting run scored by its position there).
   * Moves the id to the index of its slot (admission-slots.ts) in one step.
   */
  asmRunSlot: {
    numberOfKeys: 3,
    lua: `if ARGV[3] == '1' then
  local position = redis.call('RPUSH', KEYS[1], ARGV[1])
  if ARGV[2] == 'waiting' then redis.call('ZADD', KEYS[2], position, ARGV[1]) end
elseif ARGV[2] ~= 'waiting' then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[2] == 'in_flight' then redis.call('SADD', KEYS[3], ARGV[1]) else redis.call('SREM', KEYS[3], ARGV[1]) end
return 1`,
  },
  /** ARGV: limit, id. Adds the id to the set unless it has `limit` members already: 1 added (or there already), 0 full. */
  asmAddBelow: {
    numberOfKeys: 1,
    lua: `if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
return 1`,
  },
  /** ARGV: limit, id, now (ms). Holds the id unless the set has `limit` members already: 1 held (or held already), 0 full. */
  asmTake: {
    numberOfKeys: 1,
    lua: `if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1`,
  },
} as const;

export type ScriptRedis = Redis & {
  asmGet(key: string): Promise<string | null>;
  asmAdmission(sessionKey: string, inFlightKey: string, waitingKey: string, seqKey: string): Promise<[string, number, number, number] | null>;
  asmPut(key: string, fields: string): Promise<number>;
  asmPatch(key: string, fields: string): Promise<string | null>;
  asmResolve(key: string, pending: string, fields: string): Promise<[number, string] | null>;
  asmClaimLocal(key: string, queued: string, owner: string): Promise<[number, string] | null>;
  asmAppend(seqKey: string, eventsKey: string, sessionKey: string, appendedKey: string, maxlen: number, channel: string, json: string, runId: string, eventId: string): Promise<number>;
  asmTake(key: string, limit: number, id: string, now: number): Promise<number>;
  asmAddBelow(key: string, limit: number, id: string): Promise<number>;
  asmRunSlot(runsKey: string, waitingKey: string, inFlightKey: string, id: string, slot: string, created: 0 | 1): Promise<number>;
};

/**
 * The store's connection with SCRIPTS as methods: a script goes as EVAL the first time on a socket,
 * which loads it, and as EVALSHA after that; one Redis no longer has (SCRIPT FLUSH) is sent again as
 * EVAL. That is what ioredis's defineCommand does, but ioredis copies each defined command onto
 * every Pipeline it builds: 9.0 µs a Pipeline with the nine it had then against 4.6 without, when the store's
 * connection built one a batch (bench/RESULTS.md, thirty-seventh pass).
 */
export function withScripts(redis: Redis): ScriptRedis {
  const methods = Object.entries(SCRIPTS).map(([name, { numberOfKeys, lua }]) => {
    const sha = createHash('sha1').update(lua).digest('hex');
    const loadedOn = new WeakSet<object>();
    const load = (args: RedisValue[]) => redis.eval(lua, numberOfKeys, ...args);
    const call = (...args: RedisValue[]) => {
      const socket = redis.stream as object | undefined;
      if (!socket || !loadedOn.has(socket)) {
        if (socket) loadedOn.add(socket);
        return load(args);
      }
      return redis.evalsha(sha, numberOfKeys, ...args).catch((err: Error) => (err.message.includes('NOSCRIPT') ? load(args) : Promise.reject(err)));
    };
    return [name, call] as const;
  });
  // Each method answers what its script returns, which ScriptRedis spells out per script.
  return Object.assign(redis, Object.fromEntries(methods)) as unknown as ScriptRedis;
}

export const PENDING = JSON.stringify('pending');
export const QUEUED = JSON.stringify('queued');
/** Stream entries read per XRANGE when filtering or catching up. */
export const PAGE = 500;

/**
 * A record's fields for the scripts' recordFields: each defined top-level property and its JSON, all
 * joined by newlines ('' for none). A plain loop: Object.entries with flatMap took 3–4× as long
 * (bench/RESULTS.md, thirteenth pass).
 */
export function encode(record: object): string {
  const parts: string[] = [];
  for (const [field, value] of Object.entries(record)) if (value !== undefined) parts.push(field, JSON.stringify(value));
  return parts.join('\n');
}

export function byTime<T>(field: keyof T) {
  return (a: T, b: T) => Date.parse(a[field] as string) - Date.parse(b[field] as string);
}
