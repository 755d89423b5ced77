import { randomUUID } from 'node:crypto';
import type { AsmEvent } from '../schemas/events.js';
import type { NewEvent } from './types.js';

/** The log's own fields of an event except seq (each store assigns that its own way): an id and, unless fixed by the caller, the time of appending. */
export function stampEvent(event: NewEvent): Omit<AsmEvent, 'seq'> {
  return { ...event, id: `evt_${randomUUID()}`, timestamp: event.timestamp ?? new Date().toISOString() };
}
