/**
 * Quotas: what a process that died left held against a tenant's quota (a run it ended but did not
 * release, an event stream it had open) is released when the tenant is refused, so the tenant is not
 * locked out for good; what is still live stays held. The holdings are made old by setting the clock
 * back while they are taken (a fresh holding may name a record not written yet, and is never judged).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_QUOTAS } from '../../src/tenants.js';
import { waitFor } from '../helpers/wait.js';
import { makeRig, refusal, TENANT, type Rig } from './rig.js';

let rig: Rig;
afterEach(() => rig?.close());

/** Take holdings as of two minutes ago. */
async function heldLongAgo(take: () => Promise<void>): Promise<void> {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(Date.now() - 120_000);
  try {
    await take();
  } finally {
    vi.useRealTimers();
  }
}

describe('Quotas', () => {
  it("gives back the active slots of runs that ended without releasing them; a live run's slot stays held", async () => {
    rig = await makeRig();
    const session = await rig.session({ max_concurrent_runs: 2 });
    await rig.engine.pause(session.queue);
    const live = await rig.submit(session.id, 'live');
    await heldLongAgo(async () => {
      for (let i = 1; i < DEFAULT_QUOTAS.activeRuns; i++) await rig.store.holdings.add(TENANT, 'active_runs', `run_gone_${i}`);
    });
    const other = await rig.session();
    const admitted = await rig.submit(other.id, 'admitted');
    expect((await rig.store.holdings.takenBefore(TENANT, 'active_runs', Date.now() + 1)).sort()).toEqual([live.id, admitted.id].sort());
  });

  it('gives back the event streams of a process that is gone, not those of a live one', async () => {
    rig = await makeRig();
    await heldLongAgo(async () => {
      await rig.store.holdings.add(TENANT, 'connections', `${rig.cluster.self}/open-stream`);
      for (let i = 1; i < DEFAULT_QUOTAS.connections; i++) await rig.store.holdings.add(TENANT, 'connections', `gone-instance/stream-${i}`);
    });
    const release = await rig.quotas.holdConnection(TENANT);
    const held = await rig.store.holdings.takenBefore(TENANT, 'connections', Date.now() + 1);
    expect(held).toHaveLength(2);
    expect(held).toContain(`${rig.cluster.self}/open-stream`);
    release();
    await waitFor(async () => (await rig.store.holdings.takenBefore(TENANT, 'connections', Date.now() + 1)).length === 1, 'the released stream to be let go');
    expect(await rig.store.holdings.takenBefore(TENANT, 'connections', Date.now() + 1)).toEqual([`${rig.cluster.self}/open-stream`]);
  });

  it('refuses past the quota when nothing held is stale, naming the quota and its tenants-file field', async () => {
    rig = await makeRig();
    await heldLongAgo(async () => {
      for (let i = 0; i < DEFAULT_QUOTAS.connections; i++) await rig.store.holdings.add(TENANT, 'connections', `${rig.cluster.self}/stream-${i}`);
    });
    const err = await refusal(rig.quotas.holdConnection(TENANT));
    expect(err).toMatchObject({ kind: 'quota_exceeded', retryable: true, details: { quota: 'connections', limit: DEFAULT_QUOTAS.connections } });
    expect(err.httpStatus).toBe(429);
    expect(err.message).toContain('"quotas.connections"');
  });
});
