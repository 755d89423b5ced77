/** followEvents over the real memory store: a live gap the store cannot fill stops the follower and reports it. */
import { describe, expect, it } from 'vitest';
import { followEvents } from '../../src/http/replay.js';
import type { AsmEvent } from '../../src/schemas/events.js';
import { createMemoryStore } from '../../src/store/memory.js';
import type { EventListener, EventLog } from '../../src/store/types.js';

const SESSION = 'ses_replay';

async function logWithEvents(count: number) {
  const store = createMemoryStore({ eventsPerSession: 1_000 });
  for (let i = 0; i < count; i++) {
    await store.events.append({ session_id: SESSION, run_id: 'run_1', provider: 'shell', kind: 'stderr', payload: { content: `${i}` }, metadata: {} as never });
  }
  return store.events;
}

describe('followEvents', () => {
  it('delivers the replay, then live events, each once and in order', async () => {
    const log = await logWithEvents(3);
    const seen: Array<[number, string]> = [];
    const follower = followEvents(log, { sessionId: SESSION, after: 1, pageSize: 2 }, (e, phase) => void seen.push([e.seq, phase]), () => {
      throw new Error('no failure expected');
    });
    await follower.live;
    await log.append({ session_id: SESSION, run_id: 'run_1', provider: 'shell', kind: 'stderr', payload: { content: 'x' }, metadata: {} as never });
    await expect.poll(() => seen.length).toBe(3);
    expect(seen).toEqual([
      [2, 'replay'],
      [3, 'replay'],
      [4, 'live'],
    ]);
    follower.stop();
  });

  it('stops and reports when a live event skips ahead and the store cannot read the gap', async () => {
    const real = await logWithEvents(2);
    let listener: EventListener | undefined;
    let failReads = false;
    // The real log, except that reads fail on demand (the store went away) and live events are ours to send.
    const log: EventLog = {
      append: (e) => real.append(e),
      lastSeq: (id) => real.lastSeq(id),
      read: (id, opts) => (failReads ? Promise.reject(new Error('store unreachable')) : real.read(id, opts)),
      readJson: (id, opts) => (failReads ? Promise.reject(new Error('store unreachable')) : real.readJson(id, opts)),
      subscribe: (_id, l) => {
        listener = l;
        return () => (listener = undefined);
      },
    };
    const seen: number[] = [];
    const failures: unknown[] = [];
    const follower = followEvents(log, { sessionId: SESSION, after: 0, pageSize: 10 }, (e) => void seen.push(e.seq), (err) => failures.push(err));
    await follower.live;
    expect(seen).toEqual([1, 2]);

    failReads = true;
    const skipped = { ...(await real.read(SESSION, { after: 1, limit: 1 }))[0], seq: 5 } as AsmEvent;
    listener!(skipped);
    await expect.poll(() => failures.length).toBe(1);
    expect((failures[0] as Error).message).toBe('store unreachable');
    // Stopped: it unsubscribed, and nothing past the gap was delivered.
    expect(listener).toBeUndefined();
    expect(seen).toEqual([1, 2]);
  });
});
