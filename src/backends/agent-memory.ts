import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WarmProcesses } from './warm-processes.js';

/**
 * Admission by memory (ASM_MAX_AGENT_MEMORY_MB): before a run starts its agent, the node measures
 * what its agents use now, the resident memory (RSS) summed over the process group of every CLI
 * the core lane runs or keeps warm (each CLI leads its own group: subprocess.ts), read from /proc.
 * At or above the limit the run waits, still queued, holding its lane slot as a run waiting for
 * lane capacity does; idle warm processes are stopped first (the longest idle first), since they
 * are the memory a new run can have at once. The wait ends when usage drops below the limit or the
 * run is interrupted. A single run never waits for itself: with no agent running there is nothing
 * to wait for. CLIs that the SDK lane's vendor SDKs start are not in these groups and are not counted.
 */

export interface AgentMemoryLimits {
  /** 0: no limit. */
  maxAgentMemoryMb: number;
  agentMemoryPollMs: number;
}

export class AgentMemoryGate {
  private waitingRuns = 0;

  constructor(
    private readonly limits: AgentMemoryLimits,
    /** The process groups of the node's agents (CoreBackend.processGroups). */
    private readonly groups: () => number[],
    private readonly warm: WarmProcesses,
  ) {}

  /** Whether a run may wait here at all (a limit is set): a run's executor then takes ownership of it only once it is admitted (sessions/execution.ts). */
  get mayWait(): boolean {
    return !this.unlimited;
  }

  /** Runs waiting for memory now. */
  get waiting(): number {
    return this.waitingRuns;
  }

  /**
   * Resolves once the node's agents use less than the limit, or the signal aborted (the caller checks
   * it). A run of a session that has a process kept or prewarmed here adds no process: it goes at once.
   */
  async admit(signal: AbortSignal, sessionId: string): Promise<void> {
    if (this.unlimited || this.warm.holds(sessionId)) return;
    this.waitingRuns++;
    try {
      while (!signal.aborted) {
        if (await this.belowLimit()) return;
        if (this.warm.size > 0) {
          await this.warm.stopLongestIdle();
          continue;
        }
        await sleep(this.limits.agentMemoryPollMs, undefined, { signal }).catch(() => undefined);
      }
    } finally {
      this.waitingRuns--;
    }
  }

  /** Whether the node's agents use less than the limit now (a prewarm starts a process only then, stopping none). */
  async hasRoom(): Promise<boolean> {
    return this.unlimited || this.belowLimit();
  }

  private get unlimited(): boolean {
    return this.limits.maxAgentMemoryMb === 0;
  }

  /** With no agent here, a run never waits for itself. */
  private async belowLimit(): Promise<boolean> {
    const groups = this.groups();
    return groups.length === 0 || (await processGroupsRss(groups)) < this.limits.maxAgentMemoryMb * 1024 * 1024;
  }
}

/** The RSS, in bytes, of every process in the given process groups (0 where /proc cannot be read). */
export async function processGroupsRss(pgids: readonly number[]): Promise<number> {
  const wanted = new Set(pgids);
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return 0;
  }
  const sizes = await Promise.all(entries.filter((name) => /^\d+$/.test(name)).map((pid) => rssInGroups(pid, wanted)));
  return sizes.reduce((sum, size) => sum + size, 0);
}

/** A process's RSS if it is in one of the groups, else 0; a process gone meanwhile counts 0. */
async function rssInGroups(pid: string, groups: Set<number>): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces and parentheses): state, ppid, pgrp, ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (!groups.has(Number(fields[2]))) return 0;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch {
    return 0;
  }
}
