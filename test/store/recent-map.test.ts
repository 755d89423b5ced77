/** RecentMap (src/store/recent-map.ts): the entries added last, up to its capacity, and nothing older. */
import { describe, expect, it } from 'vitest';
import { RecentMap } from '../../src/store/recent-map.js';

describe('RecentMap', () => {
  it('forgets the oldest entry once more than its capacity were added', () => {
    const map = new RecentMap<string, number>(3);
    for (const [i, key] of ['a', 'b', 'c', 'd', 'e'].entries()) map.set(key, i);
    expect([...map]).toEqual([['c', 2], ['d', 3], ['e', 4]]);
  });

  it('keeps the place of a key set again, and its new value', () => {
    const map = new RecentMap<string, number>(2);
    map.set('a', 1).set('b', 2).set('a', 10).set('c', 3);
    expect([...map]).toEqual([['b', 2], ['c', 3]]);
    map.set('b', 20);
    expect(map.get('b')).toBe(20);
    expect(map.size).toBe(2);
  });
});
