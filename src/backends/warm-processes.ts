import type { Subprocess } from './subprocess.js';
import type { SurfaceLaunch } from './surfaces.js';

/**
 * The agent processes warm sessions keep between runs (a session option, `warm: true`): at most one
 * idle process per session, parked here by the run that used it and taken by the session's next run
 * (core.ts). Where its output goes is switched by the run holding it; parked, it goes nowhere.
 *
 * A process prewarmed for a new session (ASM_PREWARM, core.ts) waits here the same way for the
 * session's first run, holding a new conversation of its own; at most `prewarm[provider]` of them
 * wait at once, and one is never parked at the cost of another session's process.
 *
 * - A process is taken only by a run that would start it the same way (`key`: binary, directory and
 *   the provider's own key of its arguments) and continues the conversation it holds at the totals it
 *   left it at: a turn of that conversation run elsewhere meanwhile (another API process) changed the
 *   totals, so the stale process is stopped and the run starts cold.
 * - A parked process ends after its session's idle time, when its session is closed, when the service
 *   stops, or, beyond `maxParked` (ASM_MAX_WARM_PROCESSES) or when a run waits for memory
 *   (agent-memory.ts), the longest idle one first.
 * - A parked process that exits on its own (crash, OOM) just leaves the pool.
 */

/** Where the output of an agent process goes: the run holding it, or nowhere while it is parked. */
export interface AgentOutput {
  onLine(line: string): void;
  onStderr(line: string): void;
  onOverflow(): void;
}

/** An agent process, started by a run, that may outlive it. */
export interface WarmAgent {
  process: Subprocess;
  launch: SurfaceLaunch;
  output: AgentOutput;
  key: string;
  /** Whether the process printed anything yet (the surface tells its own failures by it). */
  sawOutput: boolean;
}

/** The conversation a parked process holds: its provider session id and cumulative totals. */
export interface HeldConversation {
  providerSessionId: string | null;
  totals: string;
}

/** A parked process a run may take: kept by its session's last run, or prewarmed, holding a new conversation of its own (null: the CLI names it at the first turn). */
export interface KeptAgent {
  agent: WarmAgent;
  prewarmed?: { conversationId: string | null };
}

/** A prewarmed process's place in the pool while it starts: parked once started, or given back. */
export interface PrewarmReservation {
  /**
   * Park the started process for the session's first run; `conversationId`: the new conversation it
   * holds (null: the CLI names it later). False: its session closed, or the service stopped, meanwhile, so it is stopped instead.
   */
  park(agent: WarmAgent, conversationId: string | null, idleMs: number): boolean;
  cancel(): void;
}

interface StartingPrewarm {
  provider: string;
  /** Resolves once the process is parked, given up, or (stopped) gone. */
  settled: Promise<void>;
  /** Its session closed, or the service stopped, while it started. */
  stopped: boolean;
}

interface Parked {
  agent: WarmAgent;
  conversation: HeldConversation;
  timer: NodeJS.Timeout;
  /** Prewarmed for the session's first run: the provider it counts against in ASM_PREWARM. */
  prewarmedFor?: string;
}

export class WarmProcesses {
  /** By session id, in parking order (a Map keeps insertion order: the first is the longest idle). */
  private readonly parked = new Map<string, Parked>();
  /** Prewarmed processes starting now, by session (reservePrewarm). */
  private readonly startingPrewarms = new Map<string, StartingPrewarm>();

  constructor(
    private readonly maxParked: number,
    /** ASM_PREWARM: how many prewarmed processes of each provider may wait at once. */
    private readonly prewarm: Readonly<Record<string, number>> = {},
  ) {}

  /** Idle agent processes kept here now. */
  get size(): number {
    return this.parked.size;
  }

  /** The process ids of the parked agents (each leads its process group), for memory accounting. */
  pids(): number[] {
    return [...this.parked.values()].map((p) => p.agent.process.pid);
  }

  /** Whether a process is parked for the session. */
  holds(sessionId: string): boolean {
    return this.parked.has(sessionId);
  }

  /**
   * The session's parked process, if it fits the run: the same key and, for a kept process, the
   * conversation the run continues; a prewarmed one fits only a run that starts a new conversation
   * (`startsNew`), which takes the process's own. A parked process that does not fit is stopped.
   */
  take(sessionId: string, key: string, conversation: HeldConversation, startsNew: boolean): KeptAgent | null {
    const parked = this.parked.get(sessionId);
    if (!parked) return null;
    this.unpark(sessionId, parked);
    const held = parked.conversation;
    const sameConversation = parked.prewarmedFor ? startsNew : held.providerSessionId === conversation.providerSessionId && held.totals === conversation.totals;
    if (parked.agent.key === key && parked.agent.process.alive && sameConversation) {
      return { agent: parked.agent, ...(parked.prewarmedFor && { prewarmed: { conversationId: held.providerSessionId } }) };
    }
    parked.agent.process.stop();
    return null;
  }

  /**
   * Room for the session's prewarmed process of `provider`, held while it starts: ASM_PREWARM has room
   * for it (counting those starting), and parking it stops no other session's process. Null: none.
   */
  reservePrewarm(sessionId: string, provider: string): PrewarmReservation | null {
    const starting = [...this.startingPrewarms.values()];
    const waiting = [...this.parked.values()].filter((p) => p.prewarmedFor === provider).length + starting.filter((s) => s.provider === provider).length;
    if (waiting >= (this.prewarm[provider] ?? 0) || this.parked.size + starting.length >= this.maxParked || this.startingPrewarms.has(sessionId)) return null;
    let settle!: (after: Promise<unknown>) => void;
    const settled = new Promise<void>((resolve) => (settle = (after) => void after.then(() => resolve())));
    const entry: StartingPrewarm = { provider, settled, stopped: false };
    this.startingPrewarms.set(sessionId, entry);
    const release = (after: Promise<unknown> = Promise.resolve()) => {
      if (this.startingPrewarms.get(sessionId) !== entry) return;
      this.startingPrewarms.delete(sessionId);
      settle(after);
    };
    return {
      park: (agent, conversationId, idleMs) => {
        // Its session closed, or the service stopped, while it started: it goes, and is waited for.
        if (entry.stopped) {
          agent.process.stop();
          release(agent.process.closed);
          return false;
        }
        release();
        this.park(sessionId, agent, { providerSessionId: conversationId, totals: 'null' }, idleMs, provider);
        return true;
      },
      cancel: () => release(),
    };
  }

  /** Resolves once the session's prewarmed process, if one is starting, is parked or given up: its first run waits for it rather than start another. */
  async prewarming(sessionId: string): Promise<void> {
    await this.startingPrewarms.get(sessionId)?.settled;
  }

  /** Keep the process for the session's next run, for at most idleMs. */
  park(sessionId: string, agent: WarmAgent, conversation: HeldConversation, idleMs: number, prewarmedFor?: string): void {
    this.stopSession(sessionId);
    // Parked, its output has no run: lines (keep-alives, state changes) are dropped, an overlong one stops it.
    agent.output = { onLine: () => undefined, onStderr: () => undefined, onOverflow: () => agent.process.stop() };
    const timer = setTimeout(() => this.stopSession(sessionId), idleMs);
    timer.unref();
    const entry: Parked = { agent, conversation, timer, ...(prewarmedFor && { prewarmedFor }) };
    this.parked.set(sessionId, entry);
    void agent.process.closed.then(() => {
      if (this.parked.get(sessionId) === entry) this.unpark(sessionId, entry);
    });
    while (this.parked.size > this.maxParked) void this.stopLongestIdle();
  }

  /** Stop the session's parked process, if any, and one starting for it once it has (its session closed, or its idle time ran out). */
  stopSession(sessionId: string): void {
    const starting = this.startingPrewarms.get(sessionId);
    if (starting) starting.stopped = true;
    const parked = this.parked.get(sessionId);
    if (!parked) return;
    this.unpark(sessionId, parked);
    parked.agent.process.stop();
  }

  /** Stop the longest idle process (memory is short) and wait until it is gone. */
  async stopLongestIdle(): Promise<void> {
    const oldest = this.parked.entries().next().value;
    if (!oldest) return;
    this.stopSession(oldest[0]);
    await oldest[1].agent.process.closed;
  }

  /** The sessions with a parked process here. */
  sessions(): string[] {
    return [...this.parked.keys()];
  }

  /** Stop every parked process and every one starting, and wait until they are gone (service shutdown). */
  async stopAll(): Promise<void> {
    const agents = [...this.parked.values()].map((p) => p.agent);
    const starting = [...this.startingPrewarms.values()];
    for (const entry of starting) entry.stopped = true;
    for (const sessionId of this.sessions()) this.stopSession(sessionId);
    await Promise.all([...agents.map((agent) => agent.process.closed), ...starting.map((entry) => entry.settled)]);
  }

  private unpark(sessionId: string, parked: Parked): void {
    clearTimeout(parked.timer);
    this.parked.delete(sessionId);
  }
}
