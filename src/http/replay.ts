import type { AsmEvent } from '../schemas/events.js';
import { CatchUpCursor, type Phase } from '../store/catch-up.js';
import type { EventLog } from '../store/types.js';

export interface FollowOptions {
  sessionId: string;
  /** Only this run's events are delivered; the cursor still follows the session's seq. */
  runId?: string;
  /** Deliver events with seq greater than this. */
  after: number;
  pageSize: number;
}

export interface Follower {
  /** Resolves once the replay is done and the stream is live. */
  readonly live: Promise<void>;
  stop(): void;
}

/**
 * Replay a session's events after a cursor, then go live, with no gap and no duplicate at the seam.
 * The live subscription is opened first and its events queue behind the replay, so an event appended
 * during the replay is delivered exactly once; a live event whose seq skips ahead of the cursor
 * (possible when events come from another process) makes the follower read the gap from the store
 * first (CatchUpCursor, store/catch-up.ts). Delivery is strictly in seq order.
 *
 * `deliver` learns whether an event is replayed or live. A replay may await (to pace itself to a slow
 * socket instead of flooding it); live delivery must decide at once, since the log does not wait.
 * When a live step fails (the store cannot fill a gap: Redis went away), the follower stops and
 * `onFailure` hears why, so the caller can close its stream and the client resume from its last seq.
 */
export type Deliver = (event: AsmEvent, phase: Phase) => void | Promise<void>;

export function followEvents(log: EventLog, opts: FollowOptions, deliver: Deliver, onFailure: (err: unknown) => void): Follower {
  const cursor = new CatchUpCursor(log, {
    sessionId: opts.sessionId,
    after: opts.after,
    pageSize: opts.pageSize,
    deliver: (event, phase) => (opts.runId === undefined || event.run_id === opts.runId ? deliver(event, phase) : undefined),
  });
  const stop = () => {
    cursor.stop();
    unsubscribe();
  };
  const unsubscribe = log.subscribe(opts.sessionId, (event) =>
    cursor.live(event).catch((err: unknown) => {
      stop();
      onFailure(err);
    }),
  );
  return { live: cursor.catchUp(), stop };
}
