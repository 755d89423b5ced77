import type { DeadLetter } from './types.js';

/** The in-memory dead-letter queue: the last `size` terminal failures, oldest first. */
export class DeadLetterQueue {
  /** Insertion-ordered, so the first key is the oldest letter. */
  private readonly letters = new Map<string, DeadLetter>();

  constructor(private readonly size: number) {}

  record(letter: DeadLetter): void {
    this.letters.delete(letter.commandId); // a reused id moves to the newest position
    if (this.letters.size >= this.size) this.letters.delete(this.letters.keys().next().value!);
    this.letters.set(letter.commandId, letter);
  }

  list(): DeadLetter[] {
    return [...this.letters.values()];
  }

  get(commandId: string): DeadLetter | undefined {
    return this.letters.get(commandId);
  }

  delete(commandId: string): boolean {
    return this.letters.delete(commandId);
  }
}
