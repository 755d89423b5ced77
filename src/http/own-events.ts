import type { AsmEvent } from '../schemas/events.js';
import { RecentMap } from '../store/recent-map.js';
import type { EventLog, SessionStore } from '../store/types.js';
import { inOrderWhere } from './in-order.js';

/** Sessions whose owner is remembered; one seen again after it left is asked again. */
const REMEMBERED_SESSIONS = 1_000;

/**
 * Every session's live events as a tenant may see them: those of its own sessions. An event names
 * its session, not its tenant, so each session's owner is read from the store, once while it is
 * remembered. Events are delivered in the order the log gave them (in-order.ts). Returns the
 * unsubscribe function.
 */
export function followOwnSessions(log: Pick<EventLog, 'subscribe'>, sessions: Pick<SessionStore, 'get'>, tenant: string, deliver: (event: AsmEvent) => void): () => void {
  const owned = new RecentMap<string, Promise<boolean>>(REMEMBERED_SESSIONS);
  const ownSessionOf = (event: AsmEvent): Promise<boolean> => {
    const sessionId = event.session_id;
    const known = owned.get(sessionId);
    if (known) return known;
    // A failed read withholds this event and is not remembered: the session's next event asks again.
    const asked: Promise<boolean> = sessions.get(sessionId).then(
      (session) => session?.tenant === tenant,
      () => {
        if (owned.get(sessionId) === asked) owned.delete(sessionId);
        return false;
      },
    );
    owned.set(sessionId, asked);
    return asked;
  };
  const filter = inOrderWhere(ownSessionOf, deliver);
  const unsubscribe = log.subscribe(null, filter.accept);
  return () => {
    filter.stop();
    unsubscribe();
  };
}
