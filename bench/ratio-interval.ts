/**
 * How sure a bench can be of a ratio of two medians it reports, such as `bench -- agents`' cold run
 * over the raw CLI: a percentile bootstrap over the samples, resampled in pairs. The two sides are
 * taken in the same iteration of a bench's loop, alternated, so a pair shares the host's drift, and
 * resampling whole pairs keeps that. The resampling is seeded: the same samples give the same
 * interval on every machine.
 *
 * A target's margin smaller than the interval's half-width cannot be told from noise with that many
 * samples: claude's cold run read 1.12× its raw CLI over 5 samples and 1.05× over 15, minutes apart
 * on one host (bench/RESULTS.md, issue 14, thirty-eighth pass).
 */
import { median } from './asm-server.js';

/** The `confidence` interval of median(numerators) / median(denominators), `numerators[i]` and `denominators[i]` one pair. */
export function ratioInterval(numerators: number[], denominators: number[], { confidence = 0.95, resamples = 2_000 } = {}): [number, number] {
  if (numerators.length === 0 || numerators.length !== denominators.length) {
    throw new Error(`ratioInterval needs pairs: ${numerators.length} numerators, ${denominators.length} denominators`);
  }
  const random = seeded(0x5eed);
  const pairs = numerators.length;
  const ratios: number[] = [];
  const top: number[] = new Array(pairs);
  const bottom: number[] = new Array(pairs);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < pairs; i++) {
      const pick = Math.floor(random() * pairs);
      top[i] = numerators[pick]!;
      bottom[i] = denominators[pick]!;
    }
    ratios.push(median(top) / median(bottom));
  }
  ratios.sort((a, b) => a - b);
  const tail = (1 - confidence) / 2;
  return [ratios[Math.floor(tail * (resamples - 1))]!, ratios[Math.ceil((1 - tail) * (resamples - 1))]!];
}

/** mulberry32: a small seeded generator of [0, 1), enough to resample with. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
