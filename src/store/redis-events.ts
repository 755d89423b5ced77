import type { Redis } from 'ioredis';
import type { AsmEvent } from '../schemas/events.js';
import { CatchUpCursor } from './catch-up.js';
import { PAGE, type RedisKeys, type ScriptRedis } from './redis-schema.js';
import { stampEvent } from './stamp.js';
import type { EventListener, EventLog, EventsJson, NewEvent } from './types.js';

interface SessionFeed {
  listeners: Set<EventListener>;
  /** Hands the listeners the session's events in seq order, reading from the stream what pub/sub missed. */
  cursor: CatchUpCursor;
  /** Set while the feed has no listeners: when it goes (FEED_LINGER_MS). */
  closing?: NodeJS.Timeout;
}

/**
 * How long a session's feed stays subscribed after its last listener left. A caller that submits
 * with `wait: true` one run after another subscribes to the session for each run; the feed it left
 * is still there for the next, which saves its subscribe, its starting point, its first catch-up
 * read and its unsubscribe: four of a Redis-mode run's 31 round trips (bench/RESULTS.md,
 * twenty-second pass). What a lingering feed costs is the session's messages for that long.
 */
const FEED_LINGER_MS = 1_000;

export class RedisEventLog implements EventLog {
  private readonly feeds = new Map<string, SessionFeed>();
  private readonly allListeners = new Set<EventListener>();
  /** Sessions whose last catch-up read failed, to be read again when the command connection is back. */
  private readonly unread = new Set<string>();

  constructor(
    private readonly redis: ScriptRedis,
    private readonly subscriber: Redis,
    private readonly keys: RedisKeys,
    private readonly maxPerSession: number,
    private readonly warn: (err: unknown, msg: string) => void,
    private readonly feedLingerMs = FEED_LINGER_MS,
  ) {
    subscriber.on('message', (channel: string, message: string) => this.received(channel, message, (event) => this.onSessionMessage(event)));
    subscriber.on('pmessage', (_pattern: string, channel: string, message: string) => this.received(channel, message, (event) => this.deliverToAll(event)));
    // Subscriptions are renewed here rather than by ioredis, so the catch-up read follows the renewal.
    subscriber.on('ready', () => {
      if (this.feeds.size > 0) this.activate([...this.feeds.keys()]);
      if (this.allListeners.size > 0) this.toSubscriber((sub) => sub.psubscribe(this.keys.allChannels));
    });
    // The catch-up reads go over the command connection, which may itself be reconnecting when the
    // subscriber's renewal reads (each connection finds its own stall: redis-link.ts); a read that
    // failed so is read again once it is back, rather than left until the session's next live event.
    redis.on('ready', () => {
      for (const sessionId of this.unread) void this.feeds.get(sessionId)?.cursor.catchUp();
      this.unread.clear();
    });
  }

  async append(event: NewEvent): Promise<AsmEvent> {
    const stamped = stampEvent(event);
    const sessionId = event.session_id;
    const seq = await this.redis.asmAppend(
      ...(this.keys.groups.append(sessionId) as [string, string, string, string]),
      this.maxPerSession,
      this.keys.channel(sessionId),
      JSON.stringify(stamped),
      stamped.run_id,
      stamped.id,
    );
    return { ...stamped, seq };
  }

  async read(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<AsmEvent[]> {
    return (await this.readStored(sessionId, opts)).map((event) => JSON.parse(event.json.toString()) as AsmEvent);
  }

  async readJson(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<EventsJson> {
    const events = await this.readStored(sessionId, opts);
    const json: Buffer[] = [];
    for (const event of events) json.push(event.json, COMMA);
    json.pop(); // the comma after the last
    return { json, lastSeq: events.at(-1)?.seq ?? null };
  }

  /** The events as stored: each one's seq and its JSON's bytes. */
  private async readStored(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<Array<{ seq: number; json: Buffer }>> {
    // Sent after a new feed's starting point on the same connection, which sends in the order
    // issued (RedisLink.connectBatched), Redis answers it after that point: it sees every event the
    // feed will not deliver, an append issued before the subscription included.
    const out: Array<{ seq: number; json: Buffer }> = [];
    let after = opts.after;
    while (out.length < opts.limit) {
      const count = opts.runId === undefined ? Math.min(opts.limit - out.length, PAGE) : PAGE;
      const entries = await this.redis.xrangeBuffer(this.keys.events(sessionId), `${after + 1}-0`, '+', 'COUNT', count);
      for (const [id, fields] of entries) {
        if (out.length < opts.limit && (opts.runId === undefined || runOf(fields) === opts.runId)) out.push({ seq: seqOf(id), json: fields[1]! });
      }
      if (entries.length < count) break;
      after = seqOf(entries[entries.length - 1]![0]);
    }
    return out;
  }

  async lastSeq(sessionId: string): Promise<number> {
    return Number((await this.redis.get(this.keys.seq(sessionId))) ?? 0);
  }

  subscribe(sessionId: string | null, listener: EventListener): () => void {
    if (sessionId === null) {
      if (this.allListeners.size === 0) this.toSubscriber((sub) => sub.psubscribe(this.keys.allChannels));
      this.allListeners.add(listener);
      return () => {
        if (this.allListeners.delete(listener) && this.allListeners.size === 0) this.toSubscriber((sub) => sub.punsubscribe(this.keys.allChannels));
      };
    }
    let feed = this.feeds.get(sessionId);
    if (!feed) {
      const listeners = new Set<EventListener>();
      // Sent on the command connection before anything this process appends afterwards, so every event
      // appended after subscribe() returns lies above this starting point, and a read issued after
      // subscribe() reaches Redis after it (readStored).
      const startingPoint = this.redis.get(this.keys.seq(sessionId)).then((seq) => Number(seq ?? 0));
      const cursor = new CatchUpCursor(this, {
        sessionId,
        after: startingPoint,
        pageSize: PAGE,
        deliver: (event) => this.callEach(listeners, event),
        // Live delivery goes on; followers read a gap from the store themselves.
        onCatchUpFailure: (err) => {
          this.unread.add(sessionId);
          this.warn(err, 'could not read the events missed by a live subscription');
        },
      });
      feed = { listeners, cursor };
      this.feeds.set(sessionId, feed);
      this.activate([sessionId]);
    }
    const joined = feed;
    clearTimeout(joined.closing);
    joined.closing = undefined;
    joined.listeners.add(listener);
    return () => {
      if (!joined.listeners.delete(listener) || joined.listeners.size > 0 || this.feeds.get(sessionId) !== joined) return;
      joined.closing = setTimeout(() => this.closeFeed(sessionId, joined), this.feedLingerMs).unref();
    };
  }

  /** The feed goes, unless a listener came back or it was replaced meanwhile. */
  private closeFeed(sessionId: string, feed: SessionFeed): void {
    if (feed.listeners.size > 0 || this.feeds.get(sessionId) !== feed) return;
    feed.cursor.stop();
    this.feeds.delete(sessionId);
    this.unread.delete(sessionId);
    this.toSubscriber((sub) => sub.unsubscribe(this.keys.channel(sessionId)));
  }

  stopAll(): void {
    for (const feed of this.feeds.values()) {
      clearTimeout(feed.closing);
      feed.cursor.stop();
    }
    this.feeds.clear();
    this.unread.clear();
    this.allListeners.clear();
  }

  /** Subscribe to the sessions' channels; once Redis confirms, read what was appended before that. */
  private activate(sessionIds: string[]): void {
    this.toSubscriber(async (sub) => {
      await sub.subscribe(...sessionIds.map((id) => this.keys.channel(id)));
      for (const id of sessionIds) void this.feeds.get(id)?.cursor.catchUp();
    });
  }

  /**
   * (Un)subscribe only on a ready connection: ioredis would send it during the handshake too, which
   * turns the connection into subscriber mode and fails its ready check. Whatever is skipped or
   * refused while disconnected is done by the 'ready' handler.
   */
  private toSubscriber(command: (subscriber: Redis) => Promise<unknown>): void {
    if (this.subscriber.status === 'ready') command(this.subscriber).catch((err) => this.warn(err, 'a subscription command failed'));
  }

  /** Anyone with access may publish on the channels; what is not an event is reported, not thrown into ioredis. */
  private received(channel: string, message: string, handle: (event: AsmEvent) => void): void {
    let event: AsmEvent;
    try {
      event = JSON.parse(message) as AsmEvent;
    } catch (err) {
      return this.warn(err, `ignored a message on ${channel} that is not an event`);
    }
    handle(event);
  }

  private onSessionMessage(event: AsmEvent): void {
    void this.feeds.get(event.session_id)?.cursor.live(event);
  }

  private deliverToAll(event: AsmEvent): void {
    this.callEach(this.allListeners, event);
  }

  private callEach(listeners: Set<EventListener>, event: AsmEvent): void {
    for (const listener of [...listeners]) {
      try {
        listener(event);
      } catch (err) {
        this.warn(err, 'an event listener threw');
      }
    }
  }
}

/**
 * The run of a stream entry (`e`: the event's JSON, `r`: its run's id), read without parsing the
 * event; an entry added before the run's id was kept beside the JSON has only `e`.
 */
function runOf(fields: Buffer[]): string {
  return fields[3]?.toString() ?? (JSON.parse(fields[1]!.toString()) as AsmEvent).run_id;
}

const COMMA = Buffer.from(',');

/** A stream entry's id, `<seq>-0`, as its seq. */
function seqOf(id: Buffer): number {
  return Number.parseInt(id.toString('latin1'), 10);
}
