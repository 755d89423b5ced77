/**
 * followOwnSessions over the real memory store: a tenant's all-sessions stream gets its own sessions'
 * events in the log's order, even when the first read of a session's owner answers late.
 */
import { describe, expect, it } from 'vitest';
import { followOwnSessions } from '../../src/http/own-events.js';
import type { AsmEvent } from '../../src/schemas/events.js';
import { createMemoryStore } from '../../src/store/memory.js';
import type { SessionStore } from '../../src/store/types.js';
import { waitFor } from '../helpers/wait.js';
import { newEvent, runRecord, sessionRecord } from '../store/contract.js';

/** The real store's sessions, except that a read waits while `hold` is set, or fails while `fail` is; every read is counted. */
function watchedSessions(real: SessionStore) {
  const watched = {
    reads: [] as string[],
    hold: undefined as Promise<void> | undefined,
    fail: false,
    get: async (id: string) => {
      watched.reads.push(id);
      if (watched.fail) throw new Error('store unreachable');
      await watched.hold;
      return real.get(id);
    },
  };
  return watched;
}

async function sessionOf(store: ReturnType<typeof createMemoryStore>, tenant: string) {
  const session = sessionRecord({ tenant });
  await store.sessions.create(session);
  return runRecord(session);
}

describe('followOwnSessions', () => {
  it("delivers the tenant's events in the log's order while the first read of their session's owner waits, and nobody else's", async () => {
    const store = createMemoryStore({ eventsPerSession: 100 });
    const sessions = watchedSessions(store.sessions);
    const mine = await sessionOf(store, 'acme');
    const theirs = await sessionOf(store, 'globex');
    const seen: AsmEvent[] = [];
    const stop = followOwnSessions(store.events, sessions, 'acme', (event) => seen.push(event));

    let answer!: () => void;
    sessions.hold = new Promise((resolve) => (answer = resolve));
    const first = await store.events.append(newEvent(mine));
    sessions.hold = undefined;
    // Appended while the owner of `mine` is still being read: it must not overtake the first.
    const second = await store.events.append(newEvent(mine));
    await store.events.append(newEvent(theirs));
    answer();
    const third = await store.events.append(newEvent(mine));
    await waitFor(() => seen.length === 3, 'three events of the own session');
    expect(seen.map((e) => e.id)).toEqual([first.id, second.id, third.id]);
    // Each session's owner was read once.
    expect(sessions.reads.sort()).toEqual([mine.session_id, theirs.session_id].sort());
    stop();
    await store.events.append(newEvent(mine));
    await store.events.append(newEvent(theirs));
    expect(seen).toHaveLength(3);
  });

  it("keeps the order across the tenant's sessions: one whose owner is known waits behind one whose owner is being read", async () => {
    const store = createMemoryStore({ eventsPerSession: 100 });
    const sessions = watchedSessions(store.sessions);
    const known = await sessionOf(store, 'acme');
    const asked = await sessionOf(store, 'acme');
    const seen: AsmEvent[] = [];
    const stop = followOwnSessions(store.events, sessions, 'acme', (event) => seen.push(event));
    const first = await store.events.append(newEvent(known));
    await waitFor(() => seen.length === 1, 'the first session to be known');

    let answer!: () => void;
    sessions.hold = new Promise((resolve) => (answer = resolve));
    const held = await store.events.append(newEvent(asked));
    sessions.hold = undefined;
    // The known session's event comes after the held one: it waits for it.
    const after = await store.events.append(newEvent(known));
    answer();
    await waitFor(() => seen.length === 3, 'every event');
    expect(seen.map((e) => e.id)).toEqual([first.id, held.id, after.id]);
    stop();
  });

  it('withholds an event whose owner could not be read, and asks again at the next one', async () => {
    const store = createMemoryStore({ eventsPerSession: 100 });
    const sessions = watchedSessions(store.sessions);
    const mine = await sessionOf(store, 'acme');
    const seen: AsmEvent[] = [];
    const stop = followOwnSessions(store.events, sessions, 'acme', (event) => seen.push(event));
    sessions.fail = true;
    await store.events.append(newEvent(mine));
    await waitFor(() => sessions.reads.length === 1, 'the failed read');
    sessions.fail = false;
    const next = await store.events.append(newEvent(mine));
    await waitFor(() => seen.length === 1, 'the event after the failed read');
    expect(seen[0].id).toBe(next.id);
    expect(sessions.reads).toHaveLength(2);
    stop();
  });

  it('remembers the owners of the last 1,000 sessions it saw, and asks again for one it forgot', async () => {
    const store = createMemoryStore({ eventsPerSession: 100 });
    const sessions = watchedSessions(store.sessions);
    const runs = [];
    for (let i = 0; i < 1_001; i++) runs.push(await sessionOf(store, 'acme'));
    const seen: AsmEvent[] = [];
    const stop = followOwnSessions(store.events, sessions, 'acme', (event) => seen.push(event));
    for (const run of runs.slice(0, 1_000)) await store.events.append(newEvent(run));
    await store.events.append(newEvent(runs[0]));
    expect(sessions.reads).toHaveLength(1_000);
    // The 1,001st session pushes out the first, which is read again at its next event.
    await store.events.append(newEvent(runs[1_000]));
    await store.events.append(newEvent(runs[0]));
    await waitFor(() => seen.length === 1_003, 'every event');
    expect(sessions.reads).toHaveLength(1_002);
    expect(sessions.reads.at(-1)).toBe(runs[0].session_id);
    stop();
  });
});
