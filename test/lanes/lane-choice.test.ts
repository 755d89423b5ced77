/**
 * The lane choice on its own (src/lanes/lane-choice.ts): given the lanes' state, which one starts
 * its head command next. The engines' behaviour under these rules is in conformance.ts.
 */
import { describe, expect, it } from 'vitest';
import { CommandState } from '../../src/lanes/command-state.js';
import { chooseLane, freedSlotStaysIn, hasReservations, readsClock } from '../../src/lanes/lane-choice.js';
import { LaneState, type Queued } from '../../src/lanes/lane-state.js';
import { boost, rateLimit } from '../../src/lanes/policies.js';
import type { LaneConfig } from '../../src/lanes/types.js';

interface LaneSetup extends Partial<LaneConfig> {
  /** Commands queued, all submitted at `submittedAt`. */
  pending?: number;
  submittedAt?: number;
  active?: number;
  paused?: boolean;
}

function lane(id: string, priority: number, setup: LaneSetup = {}): LaneState<Queued> {
  const { pending = 0, submittedAt = 0, active = 0, paused = false, ...config } = setup;
  const state = new LaneState<Queued>({ id, priority, minConcurrency: 0, maxConcurrency: 10, ...config }, 0);
  for (let i = 0; i < pending; i++) state.push({ state: CommandState.Pending, submittedAt });
  state.active = active;
  state.paused = paused;
  return state;
}

const ids = (chosen: LaneState<Queued> | undefined) => chosen?.id;

describe('chooseLane', () => {
  it('picks the lowest priority among lanes with work, ties going to the lane registered first', () => {
    const lanes = [lane('low', 2, { pending: 1 }), lane('high', 0, { pending: 1 }), lane('high-too', 0, { pending: 1 })];
    expect(ids(chooseLane(lanes, Infinity, 0, false))).toBe('high');
    expect(ids(chooseLane([lanes[0]!, lanes[2]!, lanes[1]!], Infinity, 0, false))).toBe('high-too');
  });

  it('skips empty, paused, full and rate-limited lanes', () => {
    const limited = lane('limited', 0, { pending: 1, rateLimit: rateLimit.perSecond(1) });
    limited.bucket!.take();
    const lanes = [
      lane('empty', 0),
      lane('paused', 0, { pending: 1, paused: true }),
      lane('full', 0, { pending: 1, active: 2, maxConcurrency: 2 }),
      limited,
      lane('ready', 9, { pending: 1 }),
    ];
    expect(ids(chooseLane(lanes, Infinity, 0, false))).toBe('ready');
    expect(ids(chooseLane(lanes, Infinity, 1000, false))).toBe('limited'); // its token is back
  });

  it('chooses nothing without a free global slot or a ready lane', () => {
    expect(chooseLane([lane('a', 0, { pending: 1 })], 0, 0, false)).toBeUndefined();
    expect(chooseLane([lane('a', 0, { pending: 1 })], -1, 0, false)).toBeUndefined();
    expect(chooseLane([lane('a', 0), lane('b', 1, { paused: true, pending: 1 })], Infinity, 0, false)).toBeUndefined();
  });

  it('lets a boosted lane overtake a higher one as its head command ages', () => {
    const lanes = [lane('high', 2, { pending: 1 }), lane('boosted', 5, { pending: 1, submittedAt: 0, boost: boost.standard(1000) })];
    expect(ids(chooseLane(lanes, Infinity, 100, false))).toBe('high'); // 900 ms left: no boost
    expect(ids(chooseLane(lanes, Infinity, 950, false))).toBe('boosted'); // 50 ms left: 5 − 4 = 1
    const higher = [lane('higher', 1, { pending: 1 }), lanes[1]!];
    expect(ids(chooseLane(higher, Infinity, 950, false))).toBe('higher'); // 1 against 1: registration order
    expect(ids(chooseLane(higher, Infinity, 1000, false))).toBe('boosted'); // past the deadline: 0
  });

  it('under a global cap keeps the slots still owed to waiting lanes below their minimum', () => {
    const busy = lane('busy', 0, { pending: 5, active: 1, minConcurrency: 1 });
    const owed = lane('owed', 1, { pending: 1, minConcurrency: 2, active: 1 });
    // One slot free, owed one more: busy (at its minimum) may not take it; owed (below) may.
    expect(ids(chooseLane([busy, owed], 1, 0, true))).toBe('owed');
    // Two free, one owed: busy may use the slot nobody reserved.
    expect(ids(chooseLane([busy, owed], 2, 0, true))).toBe('busy');
    // Without reservations minConcurrency does nothing.
    expect(ids(chooseLane([busy, owed], 1, 0, false))).toBe('busy');
  });

  it('lends the reservation of an idle or paused lane, and ranks lanes below their minimum by priority', () => {
    const busy = lane('busy', 0, { pending: 5, active: 1, minConcurrency: 1 });
    expect(ids(chooseLane([busy, lane('idle', 1, { minConcurrency: 3 })], 1, 0, true))).toBe('busy');
    expect(ids(chooseLane([busy, lane('paused', 1, { minConcurrency: 3, pending: 1, paused: true })], 1, 0, true))).toBe('busy');
    const first = lane('first', 1, { pending: 1, minConcurrency: 1 });
    const second = lane('second', 2, { pending: 1, minConcurrency: 1 });
    expect(ids(chooseLane([second, first], 1, 0, true))).toBe('first');
  });
});

describe('when the lane choice needs more than the lanes', () => {
  it('counts reservations only under a global cap with a lane that has a minimum', () => {
    const lanes = [lane('a', 0, { minConcurrency: 1 }), lane('b', 1)];
    expect(hasReservations(lanes, 4)).toBe(true);
    expect(hasReservations(lanes, Infinity)).toBe(false);
    expect(hasReservations([lane('b', 1)], 4)).toBe(false);
  });

  it('reads the clock only for boosts and rate limits', () => {
    expect(readsClock([lane('a', 0), lane('b', 1)])).toBe(false);
    expect(readsClock([lane('a', 0, { boost: boost.standard(1000) })])).toBe(true);
    expect(readsClock([lane('a', 0, { rateLimit: rateLimit.perSecond(5) })])).toBe(true);
  });
});

describe('freedSlotStaysIn', () => {
  it('holds only for the one lane with work, when nothing can hold it back', () => {
    const only = lane('only', 3, { pending: 2, active: 1 });
    expect(freedSlotStaysIn([lane('idle', 0), only], only)).toBe(true);
    expect(freedSlotStaysIn([lane('other', 9, { pending: 1 }), only], only)).toBe(false);
    const empty = lane('empty', 0, { active: 1 });
    expect(freedSlotStaysIn([empty], empty)).toBe(false);
    const paused = lane('paused', 0, { pending: 1, paused: true });
    expect(freedSlotStaysIn([paused], paused)).toBe(false);
    const limited = lane('limited', 0, { pending: 1, rateLimit: rateLimit.perSecond(100) });
    expect(freedSlotStaysIn([limited], limited)).toBe(false);
  });
});
