import type { Redis } from 'ioredis';
import { noop } from '../errors.js';
import type { RedisCalls } from './redis-calls.js';

/**
 * What engines tell each other on the signals stream, batched into one entry per event-loop turn.
 * Only what another engine needs is sent: BullMQ's own event streams carry several events per job,
 * and reading them all cost every engine about a third of its throughput.
 */
export type Signal =
  /** A job of the lane is waiting: submitted, revived, given back, or recovered from a stall. */
  | ['w', lane: string, jobId: string]
  /** A job of the lane waits out a retry delay until `dueAt` (epoch ms); nothing promotes it without a fetch. */
  | ['d', lane: string, jobId: string, dueAt: number]
  /** The sender took the job to run it. */
  | ['t', jobId: string]
  /** The job completed with this value. */
  | ['c', jobId: string, value: unknown]
  /** The job failed for good (or was cancelled while running) with this message. */
  | ['f', jobId: string, reason: string]
  /** The job was removed from its queue (cancelled). */
  | ['r', jobId: string];
export type Taken = Extract<Signal, { 0: 't' }>;
export type Outcome = Extract<Signal, { 0: 'c' | 'f' | 'r' }>;

/** The signals stream is trimmed to about this many entries (each one a batch). */
const SIGNALS_MAX_LEN = 10_000;
/** How long one read waits for new entries; an idle engine reads once this often. */
const READ_BLOCK_MS = 1_000;

export interface SignalStreamOptions {
  /** Its own connection: the read blocks it. */
  reader: Redis;
  /**
   * A read still unanswered this long after its block ended means a stalled connection, which the
   * reader then reconnects (see `read`); checked this often, so noticed within twice this.
   */
  stallMs: number;
  /** The connection entries are appended on (queued while Redis is away, like the outcomes they report). */
  writer: Redis;
  key: string;
  /** This engine's id: its own entries are not read back. */
  engineId: string;
  calls: RedisCalls;
  /** Called for every signal of another engine. */
  onSignal: (message: Signal) => void;
  /** Called after each read, however many signals it carried. */
  afterRead: () => void;
}

/**
 * The stream every engine on a prefix shares (`<prefix>::signals`). Sending appends at most one
 * entry per event-loop turn, a JSON batch of that turn's signals; reading is a blocking XREAD from
 * the end the stream had at construction, skipping this engine's own entries.
 */
export class SignalStream {
  /** Resolves once the reading position is known: signals about a job must not precede it. */
  readonly ready: Promise<void>;
  private opened = false;
  private stopped = false;
  private lastId = '0-0';
  /** Signals of this event-loop turn, sent as one stream entry by `flush`. */
  private outbox: Signal[] = [];
  /** When the read in flight was sent, or when the stalled connection was last made again (see `read`). */
  private readingSince: number | undefined;
  private stallCheck: NodeJS.Timeout | undefined;

  constructor(private readonly options: SignalStreamOptions) {
    this.ready = this.open();
    this.ready.catch(noop);
  }

  get isOpen(): boolean {
    return this.opened;
  }

  /** Queues a signal for the other engines; all of one event-loop turn go out as one stream entry. */
  send(message: Signal): void {
    this.outbox.push(message);
    if (this.outbox.length === 1) setImmediate(this.flush);
  }

  readonly flush = (): void => {
    if (this.outbox.length === 0) return;
    const batch = JSON.stringify(this.outbox);
    this.outbox = [];
    const { writer, key, engineId, calls } = this.options;
    void calls.track(writer.xadd(key, 'MAXLEN', '~', SIGNALS_MAX_LEN, '*', 'from', engineId, 'batch', batch)).catch(noop);
  };

  /** Stops reading; what is still to send can be flushed until `disconnect`. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.stallCheck);
  }

  disconnect(): void {
    this.options.reader.disconnect();
  }

  /** Starts reading the stream from its current end, then keeps reading. */
  private async open(): Promise<void> {
    const last = await this.options.reader.xrevrange(this.options.key, '+', '-', 'COUNT', 1);
    this.lastId = last[0]?.[0] ?? '0-0';
    this.opened = true;
    if (!this.stopped) this.stallCheck = setInterval(this.reconnectIfStalled, this.options.stallMs).unref();
    void this.read();
  }

  private readonly reconnectIfStalled = (): void => {
    if (this.readingSince === undefined || Date.now() - this.readingSince < READ_BLOCK_MS + this.options.stallMs) return;
    this.readingSince = Date.now();
    this.options.reader.disconnect(true);
  };

  /**
   * Reads in blocks of READ_BLOCK_MS, so that a read that stays unanswered shows a stalled connection:
   * after a network partition heals, Redis resends what it wrote into the cut only on its TCP
   * retransmission backoff, which grows with the partition's length (after a 35 s cut an API process
   * heard of no job for over 13 s: test/faults/api-partition.test.ts, bench/RESULTS.md). Reconnecting
   * ends that at once: ioredis resends the pending read on the new connection, from the same
   * position, so no signal is lost. While the read stays unanswered (the partition lasts), the
   * connection is made again at every stall, so a connect attempt lost in the cut does not wait out
   * its own timeout once the network is back. (Not the PING check of store/redis-link.ts: this room
   * imports nothing of the app, and a PING would wait behind the blocked read anyway.)
   */
  private async read(): Promise<void> {
    const { reader, key, engineId, onSignal, afterRead } = this.options;
    while (!this.stopped) {
      let reply: Array<[string, Array<[string, string[]]>]> | null;
      this.readingSince = Date.now();
      try {
        reply = (await reader.call('XREAD', 'BLOCK', READ_BLOCK_MS, 'STREAMS', key, this.lastId)) as typeof reply;
      } catch {
        if (this.stopped) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      } finally {
        this.readingSince = undefined;
      }
      if (reply === null) continue;
      for (const [, entries] of reply) {
        for (const [id, fields] of entries) {
          this.lastId = id;
          // fields: from <engine id> batch <JSON>; this engine's own batches say nothing new to it.
          if (fields[1] !== engineId) for (const message of JSON.parse(fields[3]!) as Signal[]) onSignal(message);
        }
      }
      afterRead();
      // Under load, letting signals pile up between reads makes each read carry many: one round
      // trip and one dispatch pass per batch instead of per entry.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}
