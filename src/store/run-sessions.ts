/**
 * Which session each run belongs to, as far as this process has seen (runs it created or read). A
 * run's session never changes, so an entry is never stale, whichever process writes the run; it is
 * only forgotten, oldest first, beyond `capacity`. The Redis run store uses it to send a run's
 * admission index (in its session's keys) with the run's update, in the same round trip.
 */
export class RunSessions {
  private readonly sessions = new Map<string, string>();

  constructor(private readonly capacity: number) {}

  get(runId: string): string | undefined {
    return this.sessions.get(runId);
  }

  remember(run: { id: string; session_id: string }): void {
    if (this.sessions.has(run.id)) return;
    this.sessions.set(run.id, run.session_id);
    // A Map iterates in insertion order: the first key is the oldest.
    if (this.sessions.size > this.capacity) this.sessions.delete(this.sessions.keys().next().value!);
  }
}
