import type { LaneEvent, LaneEngine, LaneEventKey } from '../lanes/types.js';
import { EXECUTE_RUN } from '../sessions/commands.js';
import type { RunStore } from '../store/types.js';
import { inOrderWhere } from './in-order.js';

/** The last event of a command: after it, its id is not seen again. */
const SETTLED: ReadonlySet<LaneEventKey> = new Set(['queue.command.completed', 'queue.command.failed', 'queue.command.timeout', 'queue.command.cancelled']);

/**
 * Queue-lane events as a tenant may see them: those of the commands that execute its own runs (a
 * run's command id is its run id, sessions/commands.ts). Lane-wide events (pressure, idle, shutdown)
 * and the service's short commands (session create and close, interrupts, decisions) name no run,
 * so nothing in them tells whose they are; they show other tenants' activity and a tenant does not
 * get them. Events are delivered in the engine's order (in-order.ts). Returns the unsubscribe function.
 */
export function followOwnQueueEvents(engine: LaneEngine, runs: RunStore, tenant: string, deliver: (event: LaneEvent) => void): () => void {
  /** Run command id → whether the run is the tenant's, asked once per command while it is in flight. */
  const owned = new Map<string, Promise<boolean>>();
  const ownRunOf = (event: LaneEvent): Promise<boolean> => {
    const commandId = String(event.payload!.command_id);
    let own = owned.get(commandId);
    if (!own) {
      own = runs.get(commandId).then((run) => run?.tenant === tenant, () => false);
      owned.set(commandId, own);
    }
    if (SETTLED.has(event.key)) owned.delete(commandId);
    return own;
  };
  const filter = inOrderWhere(ownRunOf, deliver);
  const unsubscribe = engine.subscribe(filter.accept, (event) => event.payload?.command_type === EXECUTE_RUN && typeof event.payload.command_id === 'string');
  return () => {
    filter.stop();
    unsubscribe();
  };
}
