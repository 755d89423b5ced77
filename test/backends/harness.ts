import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { expect } from 'vitest';
import { CoreBackend, type RunLimits } from '../../src/backends/core.js';
import { buildCliEnv } from '../../src/providers/env.js';
import type { BackendRun, BackendRunSpec } from '../../src/backends/types.js';
import type { ProviderDefinition } from '../../src/providers/types.js';
import { TERMINAL_KINDS, type EventKind, type EventPayload, type ProviderEvent } from '../../src/schemas/events.js';
import { testSandbox } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';

/** Runs are sandboxed as the service runs them (test/helpers/sandbox.ts). */
const sandbox = await testSandbox();

/** Short graces keep the tests fast; each test that measures one sets its own. */
export const TEST_LIMITS: RunLimits = {
  lineBytes: 64 * 1024,
  stderrBytes: 4 * 1024,
  interruptGraceMs: 2_000,
  killGraceMs: 200,
  exitGraceMs: 500,
};

export function makeSpec(provider: ProviderDefinition, overrides: Partial<BackendRunSpec> = {}): BackendRunSpec {
  return {
    runId: 'run_test',
    sessionId: 'ses_test',
    prompt: '',
    cwd: tmpdir(),
    provider,
    binary: provider.defaultBinary,
    surface: { kind: 'local_subprocess' },
    env: buildCliEnv(process.env, provider.env, []),
    node: 'test-node',
    deadlineMs: 15_000,
    idleTimeoutMs: 0,
    approvalTimeoutMs: 60_000,
    now: Date.now,
    ...overrides,
  };
}

/** A run and the events it emitted so far, with a way to wait for one. */
export interface StartedRun {
  run: BackendRun;
  events: ProviderEvent[];
  waitFor<K extends EventKind>(kind: K): Promise<EventPayload<K>>;
}

export function startRun(spec: BackendRunSpec, limits: Partial<RunLimits> = {}): StartedRun {
  const events: ProviderEvent[] = [];
  const waiters: Array<() => void> = [];
  const run = new CoreBackend({ ...TEST_LIMITS, ...limits }, sandbox).start(spec, (event) => {
    events.push(event);
    for (const wake of waiters.splice(0)) wake();
  });
  async function waitFor<K extends EventKind>(kind: K): Promise<EventPayload<K>> {
    for (;;) {
      const found = events.find((event) => event.kind === kind);
      if (found) return found.payload as EventPayload<K>;
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  }
  return { run, events, waitFor };
}

/** Runs to the end; returns every event. */
export async function runToEnd(spec: BackendRunSpec, limits: Partial<RunLimits> = {}): Promise<ProviderEvent[]> {
  const { run, events } = startRun(spec, limits);
  await run.done;
  return events;
}

/** Asserts the run's contract (exactly one terminal event, and it is the last) and returns that event. */
export function terminalOf(events: ProviderEvent[]): ProviderEvent {
  const terminals = events.filter((event) => TERMINAL_KINDS.has(event.kind));
  expect(terminals).toHaveLength(1);
  expect(events.at(-1)).toBe(terminals[0]);
  return terminals[0];
}

/** The terminal event, asserted to be an error; returns its payload. */
export function terminalError(events: ProviderEvent[]): EventPayload<'error'> & Record<string, unknown> {
  const terminal = terminalOf(events);
  expect(terminal.kind).toBe('error');
  return terminal.payload as EventPayload<'error'> & Record<string, unknown>;
}

export function kinds(events: ProviderEvent[]): EventKind[] {
  return events.map((event) => event.kind);
}

/**
 * Command names of the live processes in a process group (Linux /proc). Zombies do not count: a
 * killed child whose parent died first waits for PID 1 to reap it, yet `kill(-pgid, 0)` still finds it.
 */
export function groupMembers(pgid: number): string[] {
  const names: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8'); // "pid (comm) state ppid pgrp …"
    } catch {
      continue; // exited while we looked
    }
    const commEnd = stat.lastIndexOf(')');
    const [state, , pgrp] = stat.slice(commEnd + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z') names.push(stat.slice(stat.indexOf('(') + 1, commEnd));
  }
  return names;
}

/** Resolves once `count` processes named `name` run in the group. */
export async function waitForMembers(pgid: number, name: string, count = 1): Promise<void> {
  await waitFor(() => groupMembers(pgid).filter((member) => member === name).length >= count, `${count} × ${name} in process group ${pgid}`, 10_000);
}

/** Runs until the first event of `kind`, interrupts, and waits for the end: the events and how long the end took. */
export async function interruptAfter(spec: BackendRunSpec, kind: EventKind): Promise<{ events: ProviderEvent[]; endedInMs: number }> {
  const { run, events, waitFor } = startRun(spec);
  await waitFor(kind);
  const interruptedAt = Date.now();
  await run.interrupt('user');
  await run.done;
  return { events, endedInMs: Date.now() - interruptedAt };
}
