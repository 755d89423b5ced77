import { randomUUID } from 'node:crypto';
import type { Command } from './command.js';

/**
 * Unsettled commands by id, for cancel() and idempotent submits, in O(1) without hashing the hot
 * path. Every command occupies a slot of a reusable array; a generated id names its slot
 * (`<engine prefix>-<sequence>.<slot>`), so finding it is a parse and an array read. Only caller-chosen
 * ids go into a Map. At a million queued commands a Map of generated string ids cost more time and
 * memory than the rest of the engine's bookkeeping together.
 */
export class CommandIndex {
  /** Random per engine, so ids from two engines in one process do not collide. */
  private readonly prefix = `${randomUUID().slice(0, 8)}-`;
  private sequence = 0;
  private readonly slots: Array<Command | undefined> = [];
  private readonly freeSlots: number[] = [];
  private readonly named = new Map<string, Command>();

  /** Claims a slot for a command about to be created. */
  claimSlot(): number {
    return this.freeSlots.pop() ?? this.slots.push(undefined) - 1;
  }

  generateId(slot: number): string {
    return `${this.prefix}${this.sequence++}.${slot}`;
  }

  add(command: Command, callerChosenId: boolean): void {
    this.slots[command.slot] = command;
    if (callerChosenId) this.named.set(command.id, command);
  }

  /** Whether the command's id was chosen by its caller (so another engine may submit the same id). */
  isCallerChosen(command: Command): boolean {
    return this.named.size !== 0 && this.named.get(command.id) === command;
  }

  remove(command: Command): void {
    this.slots[command.slot] = undefined;
    this.freeSlots.push(command.slot);
    if (this.named.size !== 0 && this.named.get(command.id) === command) this.named.delete(command.id);
  }

  get(id: string): Command | undefined {
    const named = this.named.get(id);
    if (named !== undefined) return named;
    const dot = id.lastIndexOf('.');
    if (dot < 0 || !id.startsWith(this.prefix)) return undefined;
    const command = this.slots[Number(id.slice(dot + 1))];
    return command?.id === id ? command : undefined;
  }

  all(): Command[] {
    return this.slots.filter((command): command is Command => command !== undefined);
  }
}
