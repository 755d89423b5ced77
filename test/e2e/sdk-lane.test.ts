import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RequestBody } from '../../src/client/index.js';
import { reply, startServer, type TestServer } from '../helpers/server.js';

/**
 * Lane resolution with the optional SDK packages installed (this repository installs them) and
 * without, seen from a run's metadata. No real CLI is needed: the binaries are /bin/false, found but
 * useless, so a run on the SDK lane ends at once with its one terminal error; where they point
 * nowhere, nothing can run and sessions are refused. The SDK lane's behaviour with the real CLIs is
 * in test/agents (claude.test.ts, codex-sdk.test.ts).
 */

const FALSE_CLI = { ASM_CLAUDE_BIN: '/bin/false', ASM_CODEX_BIN: '/bin/false' };
const NO_CLI = { ASM_CLAUDE_BIN: '/nonexistent/claude', ASM_CODEX_BIN: '/nonexistent/codex' };

async function runOnce(server: TestServer, session: RequestBody<'/v1/sessions', 'post'>): Promise<any> {
  const created = await reply(server.client.POST('/v1/sessions', { body: session }));
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const ran = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: created.body.id } }, body: { prompt: 'Say hello', wait: true } }));
  expect(ran.status, JSON.stringify(ran.body)).toBe(200);
  return ran.body;
}

describe('the SDK lane, with the SDKs installed', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(FALSE_CLI, { sdks: true });
  });
  afterAll(() => server.close());

  it('finds both SDKs loadable, with their versions', async () => {
    const { sdks, providers } = server.app;
    expect(await sdks.status(providers.get('claude')!)).toEqual({ available: true, runtime: '@anthropic-ai/claude-agent-sdk@0.3.329', error: null });
    expect(await sdks.status(providers.get('codex')!)).toEqual({ available: true, runtime: '@openai/codex-sdk@0.163.0', error: null });
    expect((await sdks.status(providers.get('gemini')!)).available).toBe(false);
  });

  it.each([
    // codex in a mode that never asks: its asking modes need approvals, which its SDK lane lacks (below)
    [{ provider: 'claude' }, '@anthropic-ai/claude-agent-sdk@0.3.329', 'session_resume'],
    [{ provider: 'codex', permission_mode: 'bypass' }, '@openai/codex-sdk@0.163.0', 'session_resume'],
  ])('lane auto runs %j on the SDK lane (sdk_available)', async (session, runtime, capability) => {
    const run = await runOnce(server, session);
    expect(run.result.metadata).toMatchObject({
      requested_lane: 'auto',
      preferred_lane: 'sdk',
      lane: 'sdk',
      backend: 'sdk',
      lane_reason: 'sdk_available',
      lane_fallback_reason: null,
      sdk_runtime: runtime,
      sdk_available: true,
    });
    expect(run.result.metadata.capabilities).toContain(capability);
    // The CLI the SDK was told to drive fails at once: one terminal error, nothing after it.
    expect(run.state).toBe('failed');
    expect(run.result.error).toBeTruthy();
  });

  it('reports sdk_available, and both lanes on GET /v1/providers/{name}/lanes', async () => {
    expect((await reply(server.client.GET('/v1/providers/{name}', { params: { path: { name: 'claude' } } }))).body).toMatchObject({ installed: true, sdk_available: true });
    const lanes = await reply(server.client.GET('/v1/providers/{name}/lanes', { params: { path: { name: 'codex' } } }));
    expect(lanes.status).toBe(200);
    expect(lanes.body).toMatchObject({
      provider: 'codex',
      preferred_lane: 'sdk',
      lanes: [
        { lane: 'core', available: true, execution_modes: ['local', 'remote_node'], capabilities: expect.arrayContaining(['approvals']) },
        { lane: 'sdk', available: true, execution_modes: ['local'], runtime: '@openai/codex-sdk@0.163.0', error: null },
      ],
    });
    expect(lanes.body.lanes[1].capabilities).not.toContain('approvals');
    expect((await reply(server.client.GET('/v1/providers/{name}/lanes', { params: { path: { name: 'shell' } } }))).body.lanes.map((l: any) => l.lane)).toEqual(['core']);
    expect((await reply(server.client.GET('/v1/providers/{name}/lanes', { params: { path: { name: 'nope' } } }))).status).toBe(404);
  });

  it.each([
    // the session's permission fields → the lane auto picks; codex's SDK lane cannot ask for approval
    [{}, 'core', 'sdk_capability_missing', ['approvals']],
    [{ permission_mode: 'default' }, 'core', 'sdk_capability_missing', ['approvals']],
    [{ permission_mode: 'auto' }, 'core', 'sdk_capability_missing', ['approvals']],
    [{ provider_permission_mode: 'untrusted' }, 'core', 'sdk_capability_missing', ['approvals']],
    [{ permission_mode: 'bypass' }, 'sdk', null, []],
    [{ permission_mode: 'plan' }, 'sdk', null, []],
  ])('codex with %j and lane auto runs on %s (%s)', async (mode, lane, fallback, missing) => {
    const resolved = await reply(server.client.POST('/v1/providers/{name}/resolve', { params: { path: { name: 'codex' } }, body: mode }));
    expect(resolved.status, JSON.stringify(resolved.body)).toBe(200);
    expect(resolved.body).toMatchObject({ requested_lane: 'auto', preferred_lane: 'sdk', lane, lane_fallback_reason: fallback, missing_capabilities: missing, sdk_available: true });
    // A session records the same resolution on its run's metadata.
    const run = await runOnce(server, { provider: 'codex', ...mode });
    expect(run.result.metadata).toMatchObject({ lane, lane_fallback_reason: fallback, missing_capabilities: missing });
  });

  it('refuses lane sdk for a codex session that needs approvals, naming the capability', async () => {
    const needApprovals: Array<RequestBody<'/v1/sessions', 'post'>> = [{ provider: 'codex', lane: 'sdk' }, { provider: 'codex', lane: 'sdk', permission_mode: 'auto' }, { provider: 'codex', lane: 'sdk', provider_permission_mode: 'untrusted' }];
    for (const body of needApprovals) {
      const res = await reply(server.client.POST('/v1/sessions', { body }));
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'lane', reason: 'sdk_capability_missing', missing_capabilities: ['approvals'] } });
    }
    expect((await reply(server.client.POST('/v1/sessions', { body: { provider: 'codex', lane: 'sdk', permission_mode: 'bypass' } }))).status).toBe(201);
  });

  it('lane core never uses the SDK (explicit_core)', async () => {
    const run = await runOnce(server, { provider: 'claude', lane: 'core' });
    expect(run.result.metadata).toMatchObject({ requested_lane: 'core', lane: 'core', lane_reason: 'explicit_core', sdk_runtime: null, sdk_available: false });
  });
});

describe('the SDK lane, without the SDKs', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(FALSE_CLI);
  });
  afterAll(() => server.close());

  it('lane auto falls back to the core lane (sdk_unavailable)', async () => {
    const run = await runOnce(server, { provider: 'claude' });
    expect(run.result.metadata).toMatchObject({ requested_lane: 'auto', preferred_lane: 'core', lane: 'core', lane_reason: 'sdk_unavailable', sdk_available: false, sdk_runtime: null });
  });

  it('lane sdk is refused with config_invalid, never run on the core lane', async () => {
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', lane: 'sdk' } }));
    const refused = res.status === 201 ? await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: res.body.id } }, body: { prompt: 'x' } })) : res;
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ kind: 'config_invalid' });
  });
});

describe('a provider whose CLI is not installed', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(NO_CLI, { sdks: true });
  });
  afterAll(() => server.close());

  it('reports its SDK as unavailable though the package loads: the SDK drives the missing CLI', async () => {
    const info = (await reply(server.client.GET('/v1/providers/{name}', { params: { path: { name: 'claude' } } }))).body;
    expect(info).toMatchObject({ installed: false, sdk_available: false, sdk: { runtime: '@anthropic-ai/claude-agent-sdk@0.3.329' } });
    expect(info.sdk.error).toContain('/nonexistent/claude');
    const lanes = (await reply(server.client.GET('/v1/providers/{name}/lanes', { params: { path: { name: 'claude' } } }))).body;
    expect(lanes).toMatchObject({ preferred_lane: 'core', lanes: [{ lane: 'core', available: false }, { lane: 'sdk', available: false }] });
  });

  it.each(['auto', 'core', 'sdk'] as const)('refuses a session on lane %s with cli_not_found, naming the binary, its variable and the install', async (lane) => {
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', lane } }));
    expect(res.body.error).toMatchObject({
      kind: 'cli_not_found',
      details: { field: 'provider', provider: 'claude', binary: '/nonexistent/claude', variable: 'ASM_CLAUDE_BIN', install: 'npm install -g @anthropic-ai/claude-code' },
    });
    expect(res.status).toBe(422);
    expect(res.body.error.message).toContain('ASM_CLAUDE_BIN');
    const resolved = await reply(server.client.POST('/v1/providers/{name}/resolve', { params: { path: { name: 'claude' } }, body: { lane } }));
    expect(resolved.body.error.kind).toBe('cli_not_found');
  });
});
