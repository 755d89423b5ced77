/**
 * DeadLetters over the in-process engine's DLQ: a tenant sees only the failed runs of its own
 * sessions; a retry never re-executes the failed run but submits its prompt again as a new run.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeadLetters } from '../../src/sessions/dead-letters.js';
import type { RunRecord } from '../../src/store/types.js';
import { waitFor } from '../helpers/wait.js';
import { makeRig, refusal, TENANT, type Rig } from './rig.js';

let rig: Rig;
let letters: DeadLetters;
beforeEach(async () => {
  rig = await makeRig();
  letters = new DeadLetters({ engine: rig.engine, store: rig.store, submitRun: (tenant, sessionId, body) => rig.admission.submit(tenant, sessionId, body) });
});
afterEach(() => rig.close());

/** A run of `tenant` whose CLI dies, dead-lettered by its lane. */
async function failedRun(tenant = TENANT): Promise<RunRecord> {
  const session = await rig.lifecycle.create(tenant, { provider: 'claude' });
  const run = await rig.admission.submit(tenant, session.id, { prompt: 'anything [fixture:dies-mid-run]', metadata: { ticket: 'T-1' } });
  expect((await rig.ended(run.id)).state).toBe('failed');
  await waitFor(async () => (await rig.engine.deadLetters()).some((l) => l.commandId === run.id), 'the dead letter', 5_000);
  return run;
}

describe('DeadLetters', () => {
  it("lists only the tenant's own failed runs", async () => {
    const mine = await failedRun();
    const theirs = await failedRun('tenant-b');
    expect((await letters.list(TENANT)).map((l) => l.commandId)).toEqual([mine.id]);
    expect((await letters.list('tenant-b')).map((l) => l.commandId)).toEqual([theirs.id]);
  });

  it('retries a failed run as a new run of its session with the same prompt, and drops the letter', async () => {
    const failed = await failedRun();
    const retried = await letters.retry(TENANT, failed.id);
    expect(retried.run_id).not.toBe(failed.id);
    expect(retried.command_id).toBe(retried.run_id);
    const retry = (await rig.store.runs.get(retried.run_id!))!;
    expect(retry).toMatchObject({ session_id: failed.session_id, prompt: failed.prompt, queue: failed.queue, metadata: { ticket: 'T-1', retry_of: failed.id } });
    expect((await rig.store.runs.get(failed.id))!.state).toBe('failed');
    expect(await letters.list(TENANT)).not.toContainEqual(expect.objectContaining({ commandId: failed.id }));
    await rig.ended(retry.id);
  });

  it("refuses another tenant's letter as not found, for retry and delete alike", async () => {
    const failed = await failedRun();
    for (const attempt of [letters.retry('tenant-b', failed.id), letters.delete('tenant-b', failed.id), letters.delete(TENANT, 'cmd_nope')]) {
      expect((await refusal(attempt)).kind).toBe('not_found');
    }
    await letters.delete(TENANT, failed.id);
    expect(await letters.list(TENANT)).toEqual([]);
  });
});
