import type { LatencySummary } from './types.js';

/*
 * A log-linear histogram over whole microseconds: values below 16 µs get a bucket each, and every
 * power of two above is split into 16 buckets, so a reported percentile is within about 3% of the
 * true value. Recording is O(1) and memory is fixed (464 counters), where a3s-lane kept every
 * sample and re-sorted them on each record (src/lanes/README.md, "a3s-lane defects fixed").
 */
const SUB_BITS = 4;
const SUB = 1 << SUB_BITS;
const MAX_US = 2 ** 32 - 1; // about 71 minutes; longer values land in the last bucket
const BUCKETS = SUB + (32 - SUB_BITS) * SUB;

function bucketOf(us: number): number {
  if (us < SUB) return us;
  const exponent = 31 - Math.clz32(us);
  return SUB + (exponent - SUB_BITS) * SUB + ((us >>> (exponent - SUB_BITS)) - SUB);
}

/** The middle of bucket i, in µs. */
function valueOf(i: number): number {
  if (i < SUB) return i;
  const width = 2 ** ((i - SUB) >> SUB_BITS);
  const lower = (SUB + ((i - SUB) & (SUB - 1))) * width;
  return lower + (width - 1) / 2;
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  private total = 0;

  record(ms: number): void {
    const us = ms > 0 ? Math.min(Math.floor(ms * 1000), MAX_US) : 0;
    this.counts[bucketOf(us)]++;
    this.total++;
  }

  /** Percentiles in ms, taken as the value at rank ceil(p × count). */
  summary(): LatencySummary {
    return {
      count: this.total,
      p50: this.percentile(0.5),
      p90: this.percentile(0.9),
      p95: this.percentile(0.95),
      p99: this.percentile(0.99),
    };
  }

  private percentile(p: number): number {
    if (this.total === 0) return 0;
    const rank = Math.max(1, Math.ceil(p * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return valueOf(i) / 1000;
    }
    return valueOf(BUCKETS - 1) / 1000;
  }
}
