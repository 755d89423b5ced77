/**
 * A Map that keeps only the `capacity` entries added last: adding one more forgets the oldest. For
 * what a process remembers to save work (a run's session, a session's owner, an event's bytes) and may
 * ask or make again once forgotten, so that its memory stays bounded however long it runs. A Map
 * iterates in insertion order, so its first key is the oldest; setting a key it holds keeps the
 * key's place.
 */
export class RecentMap<K, V> extends Map<K, V> {
  constructor(private readonly capacity: number) {
    super();
  }

  override set(key: K, value: V): this {
    super.set(key, value);
    if (this.size > this.capacity) this.delete(this.keys().next().value!);
    return this;
  }
}
