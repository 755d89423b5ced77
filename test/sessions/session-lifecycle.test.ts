/**
 * SessionLifecycle: creation checks every option and fills the defaults; the session limit evicts
 * closed sessions only; closing refuses new runs, ends queued runs, stops running ones and waits.
 */
import { realpathSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { SESSION_DEFAULTS } from '../../src/sessions/session-lifecycle.js';
import { DEFAULT_QUOTAS } from '../../src/tenants.js';
import { isTerminalEvent, makeRig, refusal, type Rig, TENANT } from './rig.js';

let rig: Rig;
afterEach(() => rig?.close());

describe('SessionLifecycle.create', () => {
  it('fills the defaults: the provider default queue, the workspace root as cwd, no allowed tools', async () => {
    rig = await makeRig();
    const session = await rig.lifecycle.create(TENANT, { provider: 'claude' });
    expect(session).toMatchObject({
      tenant: TENANT,
      provider: 'claude',
      state: 'open',
      queue: 'prompt',
      cwd: realpathSync(rig.config.workspaceRoot),
      lane: SESSION_DEFAULTS.lane,
      max_concurrent_runs: SESSION_DEFAULTS.max_concurrent_runs,
      max_queued_runs: SESSION_DEFAULTS.max_queued_runs,
      approval_timeout_ms: SESSION_DEFAULTS.approval_timeout_ms,
      permission_mode: 'default',
      provider_permission_mode: 'default',
      allowed_tools: [],
      granted_tools: [],
      provider_session_id: null,
      last_seq: 0,
      closed_at: null,
    });
    expect(await rig.store.sessions.get(session.id)).toEqual(session);
  });

  it('refuses what could never run, naming the field', async () => {
    rig = await makeRig();
    const unknown = await refusal(rig.lifecycle.create(TENANT, { provider: 'nope' }));
    expect(unknown).toMatchObject({ kind: 'bad_request', details: { field: 'provider' } });
    expect(unknown.message).toContain('claude');
    expect(await refusal(rig.lifecycle.create(TENANT, { provider: 'claude', permission_mode: 'full-auto' }))).toMatchObject({
      kind: 'config_invalid',
      details: { field: 'permission_mode', provider: 'claude', mode: 'full-auto' },
    });
    expect(await refusal(rig.lifecycle.create(TENANT, { provider: 'claude', reasoning_effort: 'ultra' }))).toMatchObject({
      details: { field: 'reasoning_effort', provider: 'claude' },
    });
    expect(await refusal(rig.lifecycle.create(TENANT, { provider: 'claude', queue: 'no-such-lane' }))).toMatchObject({ details: { field: 'queue' } });
    expect(await refusal(rig.lifecycle.create(TENANT, { provider: 'claude', cwd: '../..' }))).toMatchObject({ kind: 'forbidden', details: { field: 'cwd' } });
    rig.config.disabledProviders.add('claude');
    expect(await refusal(rig.lifecycle.create(TENANT, { provider: 'claude' }))).toMatchObject({ kind: 'forbidden', details: { field: 'provider' } });
    expect(await rig.store.sessions.count()).toBe(0);
  });

  it('at the session limit evicts the oldest closed session, and refuses with at_capacity when none is closed', async () => {
    rig = await makeRig();
    rig.config.limits.maxSessions = 2;
    const first = await rig.session();
    const second = await rig.session();
    expect(await refusal(rig.session())).toMatchObject({ kind: 'at_capacity' });
    await rig.lifecycle.close(first.id);
    const third = await rig.session();
    expect(await rig.store.sessions.get(first.id)).toBeUndefined();
    expect((await rig.store.sessions.page(TENANT, { limit: 100 })).items.map((s) => s.id).sort()).toEqual([second.id, third.id].sort());
  });

  it('never passes the session limit with creates at once, evicting once for each closed session', async () => {
    rig = await makeRig();
    rig.config.limits.maxSessions = 3;
    const closing = await rig.session();
    await rig.lifecycle.close(closing.id);
    // Eight creates at once for the two free places and the closed session's.
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => rig.session()));
    const created = outcomes.filter((o) => o.status === 'fulfilled');
    expect(created).toHaveLength(3);
    for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toMatchObject({ kind: 'at_capacity' });
    expect(await rig.store.sessions.count()).toBe(3);
    expect(await rig.store.sessions.get(closing.id)).toBeUndefined();
  });

  it('refuses a tenant at its quota with quota_exceeded, full server or not, evicting nothing; at_capacity gives the quota back', async () => {
    rig = await makeRig();
    rig.config.limits.maxSessions = 2;
    const closing = await rig.session();
    await rig.lifecycle.close(closing.id);
    await rig.session();
    // The server is full (one open session, one closed), and the tenant's quota too.
    const heldNow = async () => (await rig.store.holdings.takenBefore(TENANT, 'sessions', Date.now() + 1)).length;
    for (let i = await heldNow(); i < DEFAULT_QUOTAS.sessions; i++) await rig.store.holdings.add(TENANT, 'sessions', `ses_held_${i}`);
    expect(await refusal(rig.session())).toMatchObject({ kind: 'quota_exceeded' });
    expect(await rig.store.sessions.get(closing.id)).toBeDefined();
    expect(await rig.store.sessions.count()).toBe(2);
    // Room in the quota: the closed session gives way.
    await rig.store.holdings.release(TENANT, 'sessions', 'ses_held_1');
    await rig.session();
    expect(await rig.store.sessions.get(closing.id)).toBeUndefined();
    // Room in the quota, none on the server: at_capacity, and the quota it took is given back.
    await rig.store.holdings.release(TENANT, 'sessions', 'ses_held_2');
    const held = await heldNow();
    expect(await refusal(rig.session())).toMatchObject({ kind: 'at_capacity' });
    expect(await heldNow()).toBe(held);
    expect(await rig.store.sessions.count()).toBe(2);
  });
});

describe('SessionLifecycle.close', () => {
  it('stops the running run, ends the queued one, records last_seq, then refuses new runs', async () => {
    rig = await makeRig();
    const session = await rig.session({ max_concurrent_runs: 1 });
    const running = await rig.submit(session.id, 'Run the slow job [fixture:c3-interrupt]');
    const waiting = await rig.submit(session.id, 'later [fixture:c1-hello]');
    await rig.event(session.id, (e) => e.run_id === running.id && e.kind === 'tool_use');

    const closed = await rig.lifecycle.close(session.id);
    expect(closed).toMatchObject({ state: 'closed', last_seq: await rig.store.events.lastSeq(session.id) });
    expect(closed.closed_at).not.toBeNull();
    for (const run of [running, waiting]) {
      expect((await rig.store.runs.get(run.id))!.result).toMatchObject({ status: 'interrupted', error: { kind: 'user_cancelled' } });
      expect((await rig.events(session.id, run.id)).filter(isTerminalEvent)).toHaveLength(1);
    }
    // The waiting run was never started.
    expect((await rig.events(session.id, waiting.id)).some((e) => e.kind === 'run_started')).toBe(false);
    expect(await refusal(rig.submit(session.id, 'more'))).toMatchObject({ kind: 'conflict' });
    expect(await rig.lifecycle.close(session.id)).toEqual(closed);
    expect(await refusal(rig.lifecycle.close('ses_nope'))).toMatchObject({ kind: 'not_found' });
  });
});
