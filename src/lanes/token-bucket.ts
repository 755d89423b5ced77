/**
 * A token bucket: capacity = maxCommands, starts full, refills continuously at maxCommands per
 * window. Unlike a3s-lane it keeps fractional tokens (its refill dropped them) and a token is only
 * taken by `take()`, which the engine calls when it actually dispatches (src/lanes/README.md,
 * "a3s-lane defects fixed").
 */
export class TokenBucket {
  private tokens: number;
  private refilledAt: number;
  private readonly perMs: number;

  constructor(
    private readonly capacity: number,
    windowMs: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.refilledAt = now;
    this.perMs = capacity / windowMs;
  }

  /** Milliseconds until a whole token is available; 0 when one is available now. */
  msUntilToken(now: number): number {
    this.refill(now);
    // The epsilon absorbs float error, so a timer armed for "the token is due" finds it there.
    return this.tokens >= 1 - 1e-9 ? 0 : (1 - this.tokens) / this.perMs;
  }

  take(): void {
    this.tokens -= 1;
  }

  private refill(now: number): void {
    if (now > this.refilledAt) {
      this.tokens = Math.min(this.capacity, this.tokens + (now - this.refilledAt) * this.perMs);
      this.refilledAt = now;
    }
  }
}
