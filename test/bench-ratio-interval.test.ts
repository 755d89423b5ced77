import { describe, expect, it } from 'vitest';
import { median } from '../bench/asm-server.js';
import { ratioInterval } from '../bench/ratio-interval.js';

/** Samples around `center`, spread ±`spread` by a fixed sequence (the same on every run). */
function samples(count: number, center: number, spread: number, offset: number): number[] {
  return Array.from({ length: count }, (_, i) => center + spread * Math.sin(i * 2.399 + offset));
}

describe('ratioInterval (bench/ratio-interval.ts)', () => {
  it('is the ratio itself when every pair has the same ratio', () => {
    const raw = samples(15, 800, 150, 0);
    const [low, high] = ratioInterval(raw.map((value) => value * 1.1), raw);
    expect(low).toBeCloseTo(1.1, 10);
    expect(high).toBeCloseTo(1.1, 10);
  });

  it('holds the ratio of the medians, and narrows as samples are added', () => {
    const interval = (count: number) => {
      const raw = samples(count, 800, 150, 0);
      const cold = samples(count, 840, 150, 1.3);
      const [low, high] = ratioInterval(cold, raw);
      const ratio = median(cold) / median(raw);
      expect(low).toBeLessThanOrEqual(ratio);
      expect(high).toBeGreaterThanOrEqual(ratio);
      return high - low;
    };
    const five = interval(5);
    const fifteen = interval(15);
    const sixty = interval(60);
    expect(fifteen).toBeLessThan(five);
    expect(sixty).toBeLessThan(fifteen);
  });

  it('gives the same interval for the same samples, and a wider one for a higher confidence', () => {
    const raw = samples(15, 800, 150, 0);
    const cold = samples(15, 840, 150, 1.3);
    expect(ratioInterval(cold, raw)).toEqual(ratioInterval(cold, raw));
    const [low95, high95] = ratioInterval(cold, raw);
    const [low99, high99] = ratioInterval(cold, raw, { confidence: 0.99 });
    expect(high99 - low99).toBeGreaterThan(high95 - low95);
  });

  it('refuses samples that are not pairs', () => {
    expect(() => ratioInterval([1, 2], [1])).toThrow(/pairs: 2 numerators, 1 denominators/);
    expect(() => ratioInterval([], [])).toThrow(/pairs/);
  });
});
