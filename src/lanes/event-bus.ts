import type { LaneEvent, LaneEventKey, LaneEventListener } from './types.js';

interface Subscriber {
  listener: LaneEventListener;
  filter: ((event: LaneEvent) => boolean) | undefined;
}

/**
 * An engine's lane events and their subscribers. Delivery is synchronous; a throwing listener is
 * isolated from the engine and from the listeners after it. Callers check `listening` before they
 * build an event's payload, so nothing is allocated for events while nobody subscribes.
 */
export class LaneEventBus {
  private subscribers: Subscriber[] = [];

  get listening(): boolean {
    return this.subscribers.length !== 0;
  }

  subscribe(listener: LaneEventListener, filter?: (event: LaneEvent) => boolean): () => void {
    const subscriber: Subscriber = { listener, filter };
    // Copy on write: an emit in progress keeps iterating the array it started with.
    this.subscribers = [...this.subscribers, subscriber];
    return () => {
      this.subscribers = this.subscribers.filter((s) => s !== subscriber);
    };
  }

  emit(key: LaneEventKey, payload: Record<string, unknown> | null): void {
    const subscribers = this.subscribers;
    if (subscribers.length === 0) return;
    const event: LaneEvent = { key, payload, timestamp: Date.now() };
    for (const { listener, filter } of subscribers) {
      // A throwing listener must not break dispatch or starve the listeners after it.
      try {
        if (filter === undefined || filter(event)) listener(event);
      } catch {
        // Listeners are observers; their failures are theirs to report.
      }
    }
  }

  /** Drops every subscriber (the engine has closed). */
  clear(): void {
    this.subscribers = [];
  }
}
