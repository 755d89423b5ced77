/** Where a command is in its life; small integers because dispatch compares them per command. */
export const CommandState = {
  Pending: 0,
  Active: 1,
  /** Waiting out a retry delay: neither queued nor running, but still owed a result. */
  Delayed: 2,
  /** Settled; if it is still in its lane's ring it is a tombstone that dispatch skips. */
  Done: 3,
  /**
   * BullMQ engine only: submitted here, but its job is running on another engine (or waits there
   * for a retry); its outcome arrives as a signal from the engine that runs it.
   */
  Elsewhere: 4,
} as const;
export type CommandState = (typeof CommandState)[keyof typeof CommandState];
