import { isTerminalRunState } from '../schemas/api.js';
import type { RunRecord } from './types.js';

/**
 * Where a run stands for its session's admission (src/sessions/admission.ts): `waiting` in the
 * session's FIFO (queued, not yet handed to its lane), `in_flight` (handed to its lane or running;
 * counts against max_concurrent_runs), or `ended`. Both stores index the session's runs by it, so
 * admission counts and picks without reading the session's history.
 */
export type AdmissionSlot = 'waiting' | 'in_flight' | 'ended';

export function admissionSlot(run: Pick<RunRecord, 'state' | 'dispatched'>): AdmissionSlot {
  if (isTerminalRunState(run.state)) return 'ended';
  return run.state === 'queued' && !run.dispatched ? 'waiting' : 'in_flight';
}
