import type { AsmEvent } from '../schemas/events.js';
import type { EventLog } from './types.js';

/**
 * Live events alone can miss some (pub/sub drops what is published while a subscriber is away, and a
 * subscription starts after the point a reader resumes from), and a log read alone is never live. A
 * CatchUpCursor follows one session from both: it delivers its events strictly in seq order, each
 * once, and when a live event skips ahead of it, it first reads the missing ones from the log.
 *
 * Used by the Redis store (a session subscription catching up after a reconnect or a dropped
 * message) and by http/replay.ts (replay from a client's cursor, then live, with nothing lost or
 * repeated at the seam). Its steps run one after another, in the order they were asked for.
 */

/** Whether an event came from reading the log or from the live subscription. */
export type Phase = 'replay' | 'live';

export interface CatchUpOptions {
  sessionId: string;
  /**
   * Deliver events with seq above this. A promise when the starting point is still being read; if it
   * rejects, the first catch-up starts from the log's last seq, and a live event before that is
   * delivered as it comes.
   */
  after: number | Promise<number>;
  /** Events per log read. */
  pageSize: number;
  /** Gets each event once, in seq order; the next step waits for what it returns. */
  deliver: (event: AsmEvent, phase: Phase) => void | Promise<void>;
  /**
   * Set: a catch-up that fails (the log unreachable) is reported here and the cursor goes on, with
   * the gap left unread. Unset: the failure rejects that step and every later one.
   */
  onCatchUpFailure?: (err: unknown) => void;
}

export class CatchUpCursor {
  /** Highest seq delivered; undefined while the starting point is unknown. */
  private position: number | undefined;
  private steps: Promise<void>;
  private stopped = false;

  constructor(
    private readonly log: Pick<EventLog, 'read' | 'lastSeq'>,
    private readonly opts: CatchUpOptions,
  ) {
    if (typeof opts.after === 'number') {
      this.position = opts.after;
      this.steps = Promise.resolve();
    } else {
      this.steps = opts.after.then(
        (seq) => void (this.position ??= seq),
        () => undefined,
      );
    }
  }

  /**
   * Deliver what the log holds above the cursor, at least up to `upTo` (a page read may go beyond it);
   * without `upTo`, until the log has no more. Resolves once done.
   */
  catchUp(upTo = Number.POSITIVE_INFINITY): Promise<void> {
    return this.enqueue(() => this.readUpTo(upTo));
  }

  /** A live event: the events between the cursor and it are read from the log first. */
  live(event: AsmEvent): Promise<void> {
    return this.enqueue(async () => {
      if (this.position !== undefined && event.seq > this.position + 1) await this.readUpTo(event.seq - 1);
      await this.deliver(event, 'live');
    });
  }

  /** Deliver nothing more; a step under way ends at its next event. */
  stop(): void {
    this.stopped = true;
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    this.steps = this.steps.then(() => (this.stopped ? undefined : step()));
    return this.steps;
  }

  private async readUpTo(upTo: number): Promise<void> {
    try {
      this.position ??= await this.log.lastSeq(this.opts.sessionId);
      while (!this.stopped && this.position < upTo) {
        const page = await this.log.read(this.opts.sessionId, { after: this.position, limit: this.opts.pageSize });
        for (const event of page) {
          if (this.stopped) return;
          await this.deliver(event, 'replay');
        }
        // A short page is all the log has; events appended later come live.
        if (page.length < this.opts.pageSize) return;
      }
    } catch (err) {
      if (!this.opts.onCatchUpFailure) throw err;
      this.opts.onCatchUpFailure(err);
    }
  }

  private async deliver(event: AsmEvent, phase: Phase): Promise<void> {
    if (this.position !== undefined && event.seq <= this.position) return;
    this.position = event.seq;
    await this.opts.deliver(event, phase);
  }
}
