import { randomUUID } from 'node:crypto';
import type { AsmEvent } from '../schemas/events.js';
import type { NewEvent } from './types.js';

/** A new event id. */
export function newEventId(): string {
  return `evt_${randomUUID()}`;
}

/** The log's own fields of an event except seq (each store assigns that its own way): an id and the time of appending, unless the caller fixed them. */
export function stampEvent(event: NewEvent): Omit<AsmEvent, 'seq'> {
  return { ...event, id: event.id ?? newEventId(), timestamp: event.timestamp ?? new Date().toISOString() };
}
