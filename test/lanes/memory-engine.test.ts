import { describe, expect, it } from 'vitest';
import { formatDuration } from '../../src/lanes/errors.js';
import { Histogram } from '../../src/lanes/histogram.js';
import { createInProcessEngine, InProcessLaneEngine } from '../../src/lanes/index.js';
import {
  DEFAULT_LANES,
  boost,
  effectivePriority,
  mergeLanes,
  rateLimit,
  retry,
  retryDelayMs,
  validateLanes,
} from '../../src/lanes/policies.js';
import { Ring } from '../../src/lanes/ring.js';
import { TokenBucket } from '../../src/lanes/token-bucket.js';
import { LaneError, type LaneConfig } from '../../src/lanes/types.js';
import { laneEngineConformance } from './conformance.js';

laneEngineConformance('InProcessLaneEngine', (options) => createInProcessEngine(options));

const lane = (extra: Partial<LaneConfig> = {}): LaneConfig => ({
  id: 'work',
  priority: 0,
  minConcurrency: 1,
  maxConcurrency: 2,
  ...extra,
});

function configError(configs: LaneConfig[]): LaneError {
  try {
    validateLanes(configs);
  } catch (error) {
    expect(error).toBeInstanceOf(LaneError);
    expect((error as LaneError).code).toBe('config_invalid');
    return error as LaneError;
  }
  throw new Error('expected validateLanes to throw');
}

describe('retry policies', () => {
  it('have a3s-lane defaults', () => {
    expect(retry.exponential(3)).toEqual({ maxRetries: 3, initialDelayMs: 100, maxDelayMs: 30_000, multiplier: 2 });
    expect(retry.fixed(2, 250)).toEqual({ maxRetries: 2, initialDelayMs: 250, maxDelayMs: 250, multiplier: 1 });
    expect(retry.none().maxRetries).toBe(0);
  });

  it('delay exponentially without jitter: 0, 100, 200, 400, 800, 1600 ms', () => {
    const policy = retry.exponential(5);
    expect([0, 1, 2, 3, 4, 5].map((k) => retryDelayMs(policy, k))).toEqual([0, 100, 200, 400, 800, 1600]);
  });

  it('cap the delay: initial 1 s, max 5 s gives 1, 2, 4, 5, 5 s', () => {
    const policy = { maxRetries: 5, initialDelayMs: 1000, maxDelayMs: 5000, multiplier: 2 };
    expect([1, 2, 3, 4, 5].map((k) => retryDelayMs(policy, k))).toEqual([1000, 2000, 4000, 5000, 5000]);
    expect(retryDelayMs(retry.exponential(30), 30)).toBe(30_000);
  });

  it('give fixed delays, zero without retries, and truncate to whole milliseconds', () => {
    expect([0, 1, 2, 3].map((k) => retryDelayMs(retry.fixed(3, 50), k))).toEqual([0, 50, 50, 50]);
    expect(retryDelayMs(retry.none(), 1)).toBe(0);
    expect(retryDelayMs({ maxRetries: 3, initialDelayMs: 10, maxDelayMs: 1000, multiplier: 1.55 }, 3)).toBe(24);
  });
});

describe('rate limits', () => {
  it('are per second, minute and hour', () => {
    expect(rateLimit.perSecond(50)).toEqual({ maxCommands: 50, windowMs: 1000 });
    expect(rateLimit.perMinute(5)).toEqual({ maxCommands: 5, windowMs: 60_000 });
    expect(rateLimit.perHour(7)).toEqual({ maxCommands: 7, windowMs: 3_600_000 });
  });

  it('use a token bucket that starts full and refills continuously', () => {
    const bucket = new TokenBucket(10, 100, 0);
    for (let i = 0; i < 10; i++) {
      expect(bucket.msUntilToken(0)).toBe(0);
      bucket.take();
    }
    expect(bucket.msUntilToken(0)).toBeCloseTo(10);
    expect(bucket.msUntilToken(5)).toBeCloseTo(5);
    expect(bucket.msUntilToken(10)).toBe(0);
    expect(bucket.msUntilToken(10_000)).toBe(0);
    for (let i = 0; i < 10; i++) bucket.take(); // refill stops at capacity
    expect(bucket.msUntilToken(10_000)).toBeGreaterThan(0);
  });
});

describe('priority boost', () => {
  it('standard steps up at 75, 50, 25 and 10% of the deadline remaining', () => {
    const b = boost.standard(1000);
    expect(b.intervals).toEqual([
      [750, 1],
      [500, 2],
      [250, 3],
      [100, 4],
    ]);
    const at = (elapsed: number) => effectivePriority(5, b, 0, elapsed);
    expect([at(0), at(249), at(250), at(500), at(750), at(900), at(999), at(1000)]).toEqual([5, 5, 4, 3, 2, 1, 1, 0]);
  });

  it('aggressive steps by 2 at 80, 60, 40 and 20% remaining', () => {
    const b = boost.aggressive(1000);
    expect(b.intervals.map(([, step]) => step)).toEqual([2, 4, 6, 8]);
    expect([100, 200, 400, 600, 800].map((elapsed) => effectivePriority(9, b, 0, elapsed))).toEqual([9, 7, 5, 3, 1]);
  });

  it('floors at 0, jumps to 0 past the deadline, and leaves the base alone when disabled', () => {
    expect(effectivePriority(1, boost.aggressive(1000), 0, 900)).toBe(0);
    expect(effectivePriority(5, { deadlineMs: 100, intervals: [] }, 0, 50)).toBe(5);
    expect(effectivePriority(5, { deadlineMs: 100, intervals: [] }, 0, 100)).toBe(0);
    expect(effectivePriority(5, boost.disabled(), 0, 1e9)).toBe(5);
  });

  it('lets the last matching threshold win, even when it boosts less', () => {
    const custom = { deadlineMs: 100, intervals: [[80, 3], [50, 1]] as Array<[number, number]> };
    expect(effectivePriority(5, custom, 0, 30)).toBe(2);
    expect(effectivePriority(5, custom, 0, 60)).toBe(4);
  });
});

describe('lane configuration', () => {
  it('has the a3s-lane default lanes', () => {
    expect(DEFAULT_LANES.map((l) => [l.id, l.priority, l.minConcurrency, l.maxConcurrency])).toEqual([
      ['system', 0, 1, 5],
      ['control', 1, 1, 3],
      ['query', 2, 1, 10],
      ['session', 3, 1, 5],
      ['skill', 4, 1, 3],
      ['prompt', 5, 1, 2],
    ]);
  });

  it('merges overrides: same id replaces in place, partial overrides adjust, new ids extend', () => {
    const merged = mergeLanes(DEFAULT_LANES, [
      { id: 'query', priority: 2, minConcurrency: 2, maxConcurrency: 20 },
      { id: 'prompt', maxConcurrency: 8 },
      { id: 'batch', priority: 9, maxConcurrency: 1 },
    ]);
    expect(merged.map((l) => l.id)).toEqual(['system', 'control', 'query', 'session', 'skill', 'prompt', 'batch']);
    expect(merged[2]).toEqual({ id: 'query', priority: 2, minConcurrency: 2, maxConcurrency: 20 });
    expect(merged[5]).toEqual({ id: 'prompt', priority: 5, minConcurrency: 1, maxConcurrency: 8 });
    expect(merged[6]).toEqual({ id: 'batch', priority: 9, minConcurrency: 1, maxConcurrency: 1 });
    expect(DEFAULT_LANES[5].maxConcurrency).toBe(2);
    expect(() => mergeLanes(DEFAULT_LANES, [{ id: 'incomplete' }])).toThrow(LaneError);
  });

  it('rejects invalid lanes, naming the lane and the field', () => {
    expect(configError([lane({ minConcurrency: 3, maxConcurrency: 2 })]).message).toBe(
      'Configuration error: lane "work": minConcurrency (3) exceeds maxConcurrency (2)',
    );
    expect(configError([lane({ maxConcurrency: 0, minConcurrency: 0 })]).message).toMatch(/lane "work": maxConcurrency/);
    expect(configError([lane({ pressureThreshold: 0 })]).message).toMatch(/lane "work": pressureThreshold/);
    expect(configError([lane({ maxPending: 0 })]).message).toMatch(/lane "work": maxPending/);
    expect(configError([lane(), lane()]).message).toMatch(/lane "work": id is duplicated/);
    expect(configError([lane({ rateLimit: { maxCommands: 0, windowMs: 1000 } })]).message).toMatch(/rateLimit.maxCommands/);
    expect(configError([]).message).toMatch(/at least one lane/);
    expect(() => validateLanes([lane({ minConcurrency: 0 }), lane({ id: 'other', priority: 3 })])).not.toThrow();
  });

  it('rejects invalid engine options', () => {
    expect(() => createInProcessEngine({ lanes: [lane()], globalConcurrency: 0 })).toThrow(/globalConcurrency/);
    expect(() => createInProcessEngine({ lanes: [lane()], dlqSize: -1 })).toThrow(/dlqSize/);
  });
});

describe('formatDuration (Rust Duration Debug)', () => {
  it('prints 50ms, 5s, 1.5s, 100µs', () => {
    expect([50, 5000, 1500, 0.1, 1000, 2.5].map(formatDuration)).toEqual(['50ms', '5s', '1.5s', '100µs', '1s', '2.5ms']);
  });
});

describe('Histogram', () => {
  it('reports percentiles within a few percent, in bounded memory', () => {
    const histogram = new Histogram();
    for (let ms = 1; ms <= 1000; ms++) histogram.record(ms);
    const summary = histogram.summary();
    expect(summary.count).toBe(1000);
    expect(Math.abs(summary.p50 - 500) / 500).toBeLessThan(0.04);
    expect(Math.abs(summary.p90 - 900) / 900).toBeLessThan(0.04);
    expect(Math.abs(summary.p99 - 990) / 990).toBeLessThan(0.04);
  });

  it('is exact for tiny values and survives empty, zero and huge inputs', () => {
    const histogram = new Histogram();
    expect(histogram.summary()).toEqual({ count: 0, p50: 0, p90: 0, p95: 0, p99: 0 });
    histogram.record(0.005);
    histogram.record(-1);
    histogram.record(Number.NaN);
    histogram.record(1e12);
    const summary = histogram.summary();
    expect(summary.count).toBe(4);
    expect(summary.p50).toBe(0);
    expect(summary.p99).toBeGreaterThan(4e6);
  });
});

describe('Ring', () => {
  it('is a FIFO across growth and wrap-around', () => {
    const ring = new Ring<number>();
    const expected: number[] = [];
    let next = 0;
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 7; i++) {
        ring.push(next);
        expected.push(next++);
      }
      for (let i = 0; i < 5; i++) expect(ring.shift()).toBe(expected.shift());
    }
    expect(ring.length).toBe(expected.length);
    expect(ring.peek()).toBe(expected[0]);
    ring.clear();
    expect([ring.length, ring.shift()]).toEqual([0, undefined]);
  });
});

describe('InProcessLaneEngine specifics', () => {
  it('in tick mode dispatches one command per tick, like a3s-lane', async () => {
    const engine = new InProcessLaneEngine({ lanes: [lane({ maxConcurrency: 10 })], tickMs: 20 });
    try {
      const startedAt: number[] = [];
      engine.register('mark', () => startedAt.push(Date.now()));
      await engine.start();
      const handles = await Promise.all([1, 2, 3, 4].map(() => engine.submit('work', { type: 'mark', payload: null })));
      await Promise.all(handles.map((h) => h.result));
      expect(startedAt[3] - startedAt[0]).toBeGreaterThanOrEqual(45);
    } finally {
      await engine.close();
    }
  });

  it('keeps dispatching a large backlog of synchronous handlers without starving timers', async () => {
    const engine = createInProcessEngine({ lanes: [lane({ maxConcurrency: 100 })] });
    try {
      let done = 0;
      engine.register('noop', () => done++);
      for (let i = 0; i < 20_000; i++) await engine.submit('work', { type: 'noop', payload: i });
      let timerFiredAt = -1;
      setTimeout(() => (timerFiredAt = done), 0);
      await engine.start();
      await engine.drain(10_000);
      expect(done).toBe(20_000);
      expect(timerFiredAt).toBeGreaterThanOrEqual(0);
      expect(timerFiredAt).toBeLessThan(20_000);
    } finally {
      await engine.close();
    }
  });

  it('finds a generated id only while its command is live, even after its index slot is reused', async () => {
    const engine = createInProcessEngine({ lanes: [lane({ maxConcurrency: 1 })] });
    try {
      engine.register('echo', (payload) => payload);
      const first = await engine.submit('work', { type: 'echo', payload: 1 });
      await engine.start();
      await first.result;
      await engine.pause('work');
      const second = await engine.submit('work', { type: 'echo', payload: 2 });
      expect(second.id).not.toBe(first.id);
      expect(await engine.cancel(first.id)).toBe('unknown');
      expect(await engine.cancel(`${second.id}0`)).toBe('unknown');
      expect(await engine.cancel(second.id)).toBe('pending');
    } finally {
      await engine.close();
    }
  });

  it('does not crash the process when nobody reads a failed result', async () => {
    const engine = createInProcessEngine({ lanes: [lane()] });
    try {
      engine.register('broken', () => {
        throw new Error('ignored');
      });
      await engine.start();
      await engine.submit('work', { type: 'broken', payload: null });
      await engine.drain(1_000);
      expect((await engine.metrics())[0].failed).toBe(1);
    } finally {
      await engine.close();
    }
  });
});
