import type { AsmEvent } from '../schemas/events.js';
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
 * The live subscription is opened first and buffered while the replay reads the store, so an event
 * appended during the replay is delivered exactly once. A live event whose seq skips ahead of the
 * cursor (possible when events come from another process) makes the follower read the gap from the
 * store first. Delivery is strictly in seq order.
 */
/**
 * `deliver` learns whether an event is replayed or live. A replay may await (to pace itself to a slow
 * socket instead of flooding it); live delivery must decide at once, since the log does not wait.
 */
export type Deliver = (event: AsmEvent, phase: 'replay' | 'live') => void | Promise<void>;

export function followEvents(log: EventLog, opts: FollowOptions, deliver: Deliver): Follower {
  let cursor = opts.after;
  let stopped = false;
  let chain: Promise<void> = Promise.resolve();

  const emit = async (event: AsmEvent, phase: 'replay' | 'live') => {
    if (event.seq <= cursor) return;
    cursor = event.seq;
    if (opts.runId === undefined || event.run_id === opts.runId) await deliver(event, phase);
  };

  const catchUp = async (upTo: number) => {
    while (!stopped && cursor < upTo) {
      const page = await log.read(opts.sessionId, { after: cursor, limit: opts.pageSize });
      if (page.length === 0) return;
      for (const event of page) {
        if (stopped) return;
        await emit(event, 'replay');
      }
    }
  };

  const unsubscribe = log.subscribe(opts.sessionId, (event) => {
    chain = chain.then(async () => {
      if (stopped) return;
      if (event.seq > cursor + 1) await catchUp(event.seq - 1);
      await emit(event, 'live');
    });
  });

  chain = chain.then(() => catchUp(Number.MAX_SAFE_INTEGER));
  return {
    live: chain,
    stop() {
      stopped = true;
      unsubscribe();
    },
  };
}
