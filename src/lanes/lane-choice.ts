import type { LaneState, Queued } from './lane-state.js';

/**
 * The scheduling rule shared by every engine: which lane starts its oldest pending command next.
 *
 * Among lanes that have pending work, are not paused, are below their maxConcurrency and hold a
 * rate-limit token, the one with the lowest effective priority (base priority lowered by its boost)
 * wins, ties going to the lane registered first. The global cap and minConcurrency add one rule:
 *
 *   A lane below its minConcurrency may start a command whenever a global slot is free. A lane at
 *   or above its minConcurrency may start one only if the free global slots exceed the slots still
 *   reserved for the other lanes that are waiting (ready to start work now): Σ (min − active) over
 *   those lanes.
 *
 * So a lane's reserved slots are held only while it has work to put in them (idle, paused or
 * rate-limited lanes lend theirs out), and a busy higher lane cannot take the last free slot from a
 * lower lane that is waiting below its minimum. Running commands are never preempted: a lane that
 * gets work after lending its slots out waits for the next one to free up, which then goes to it.
 * Without a global cap, minConcurrency has no effect.
 *
 * `free` is the number of free global slots (Infinity without a cap) and `now` the clock that boosts
 * and rate limits read. `reserves` says whether reservations apply at all (`hasReservations`): they
 * cost a second scan of the lanes, so the scan is skipped when they cannot matter.
 */
export function chooseLane<C extends Queued>(
  lanes: readonly LaneState<C>[],
  free: number,
  now: number,
  reserves: boolean,
): LaneState<C> | undefined {
  if (free <= 0) return undefined;
  let reserved = 0;
  if (reserves) {
    for (const lane of lanes) if (lane.ready(now)) reserved += lane.unusedReservation();
  }
  let best: LaneState<C> | undefined;
  let bestPriority = Infinity;
  for (const lane of lanes) {
    if (!lane.ready(now)) continue;
    // Above its own minimum, a lane may only use slots nobody else has reserved.
    if (reserves && lane.active >= lane.min && free <= reserved) continue;
    const priority = lane.effectivePriority(now);
    if (priority < bestPriority) {
      best = lane;
      bestPriority = priority;
    }
  }
  return best;
}

/**
 * Whether the slot `lane` is about to free will go to `lane` again, whatever `chooseLane` is asked
 * next: the lane has work and is the only one with any, and no rate limit or pause can hold it back.
 * Only then may an engine prepare the lane's next command early (the BullMQ engine fetches its job
 * with the completion) without bypassing the choice between lanes.
 */
export function freedSlotStaysIn<C extends Queued>(lanes: readonly LaneState<C>[], lane: LaneState<C>): boolean {
  if (lane.pending === 0 || lane.paused || lane.bucket !== undefined) return false;
  for (const other of lanes) if (other !== lane && other.pending !== 0) return false;
  return true;
}

/** Whether `chooseLane` must count reservations: only under a global cap, and only if a lane has a minimum. */
export function hasReservations(lanes: readonly LaneState<Queued>[], globalCap: number): boolean {
  return globalCap !== Infinity && lanes.some((lane) => lane.min > 0);
}

/** Whether `chooseLane` reads its clock: only boosts and rate limits depend on the time. */
export function readsClock(lanes: readonly LaneState<Queued>[]): boolean {
  return lanes.some((lane) => lane.bucket !== undefined || lane.boost !== undefined);
}
