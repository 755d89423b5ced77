/**
 * A queue lane's retry and timeout applied to agent runs (SPEC §8): a run is retried only when it
 * failed before its agent did anything; a run that failed after it started fails its command at once
 * (never `completed`), into the DLQ; and a lane timeout with retry never ends a still-running run a
 * second time. Real lanes, real fake CLIs, one terminal event per run.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { retry } from '../../src/lanes/index.js';
import { TERMINAL_KINDS } from '../../src/schemas/events.js';
import { waitFor } from '../helpers/wait.js';
import { makeRig, type Rig } from './rig.js';

let rig: Rig;
afterEach(() => rig?.close());

async function promptLane() {
  return (await rig.engine.metrics()).find((m) => m.id === 'prompt')!;
}

describe('run retries on a lane with a retry policy', () => {
  it('fails a run that failed after its agent started at once: not retried, not completed, dead-lettered', async () => {
    rig = await makeRig({ lanes: [{ id: 'prompt', retry: retry.fixed(3, 10) }] });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'anything [fixture:dies-mid-run]');
    expect((await rig.ended(run.id)).state).toBe('failed');
    await waitFor(async () => (await rig.engine.deadLetters()).some((l) => l.commandId === run.id), 'the dead letter', 5_000);
    const lane = await promptLane();
    expect(lane).toMatchObject({ retried: 0, failed: 1, completed: 0, deadLettered: 1 });
    const letter = (await rig.engine.deadLetters()).find((l) => l.commandId === run.id)!;
    expect(letter.attempts).toBe(1);
    const events = await rig.events(session.id, run.id);
    expect(events.filter((e) => TERMINAL_KINDS.has(e.kind))).toHaveLength(1);
    expect(events.filter((e) => e.kind === 'run_started')).toHaveLength(1);
  });

  it('with a lane timeout, ends a hung run once (timeout), never as node_lost beside its own end, and dead-letters it', async () => {
    rig = await makeRig({ lanes: [{ id: 'prompt', timeoutMs: 400, retry: retry.fixed(2, 10) }] });
    const session = await rig.session();
    const run = await rig.submit(session.id, 'anything [fixture:never-prints]');
    const final = await rig.ended(run.id, 20_000);
    expect(final.state).toBe('failed');
    expect(final.result!.error).toMatchObject({ kind: 'timeout' });
    await waitFor(async () => (await rig.engine.deadLetters()).some((l) => l.commandId === run.id), 'the dead letter', 20_000);
    const events = await rig.events(session.id, run.id);
    const terminal = events.filter((e) => TERMINAL_KINDS.has(e.kind));
    expect(terminal).toHaveLength(1);
    expect(events.some((e) => e.kind === 'error' && e.payload.kind === 'node_lost')).toBe(false);
    expect(events.filter((e) => e.kind === 'run_started')).toHaveLength(1);
    expect(await promptLane()).toMatchObject({ completed: 0, deadLettered: 1 });
  });
});
