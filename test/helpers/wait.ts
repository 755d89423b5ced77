/**
 * The tests' one polling loop, for conditions that no event announces (a process that appears in
 * /proc, a state another process writes, a count a lane updates after the fact).
 */

/** What `condition` returned once it held: its value without the falsy cases. */
type Found<T> = Exclude<T, undefined | null | false | 0 | ''>;

/**
 * Calls `condition` every 10 ms until it returns something truthy, and returns that; fails after
 * `timeoutMs` with an error that says what it was waiting for.
 */
export async function waitFor<T>(condition: () => T | Promise<T>, what: string, timeoutMs = 5_000): Promise<Found<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as Found<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
