import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type TestServer } from '../helpers/server.js';

/**
 * Lane resolution with the optional SDK packages installed (this repository installs them) and
 * without, seen from a run's metadata. No real CLI is needed: the binaries point nowhere, so a run on
 * the SDK lane ends at once with its one terminal error. The SDK lane's behaviour with the real CLIs
 * is in test/agents (claude.test.ts, codex-sdk.test.ts).
 */

const NO_CLI = { ASM_CLAUDE_BIN: '/nonexistent/claude', ASM_CODEX_BIN: '/nonexistent/codex' };

async function runOnce(server: TestServer, session: Record<string, unknown>): Promise<any> {
  const created = await server.request('POST', '/v1/sessions', session);
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const ran = await server.request('POST', `/v1/sessions/${created.body.id}/runs`, { prompt: 'Say hello', wait: true });
  expect(ran.status, JSON.stringify(ran.body)).toBe(200);
  return ran.body;
}

describe('the SDK lane, with the SDKs installed', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(NO_CLI, { sdks: true });
  });
  afterAll(() => server.close());

  it('finds both SDKs loadable, with their versions', async () => {
    const { sdks, providers } = server.app;
    expect(await sdks.status(providers.get('claude')!)).toEqual({ available: true, runtime: '@anthropic-ai/claude-agent-sdk@0.3.329', error: null });
    expect(await sdks.status(providers.get('codex')!)).toEqual({ available: true, runtime: '@openai/codex-sdk@0.163.0', error: null });
    expect((await sdks.status(providers.get('gemini')!)).available).toBe(false);
  });

  it.each([
    ['claude', '@anthropic-ai/claude-agent-sdk@0.3.329', 'session_resume'],
    ['codex', '@openai/codex-sdk@0.163.0', 'session_resume'],
  ])('lane auto runs %s on the SDK lane (sdk_available)', async (provider, runtime, capability) => {
    const run = await runOnce(server, { provider });
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
    // The CLI the SDK was told to drive does not exist: one terminal error, nothing after it.
    expect(run.state).toBe('failed');
    expect(run.result.error.kind).toBe('transport_error');
  });

  it('lane core never uses the SDK (explicit_core)', async () => {
    const run = await runOnce(server, { provider: 'claude', lane: 'core' });
    expect(run.result.metadata).toMatchObject({ requested_lane: 'core', lane: 'core', lane_reason: 'explicit_core', sdk_runtime: null, sdk_available: false });
  });
});

describe('the SDK lane, without the SDKs', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(NO_CLI);
  });
  afterAll(() => server.close());

  it('lane auto falls back to the core lane (sdk_unavailable)', async () => {
    const run = await runOnce(server, { provider: 'claude' });
    expect(run.result.metadata).toMatchObject({ requested_lane: 'auto', preferred_lane: 'core', lane: 'core', lane_reason: 'sdk_unavailable', sdk_available: false, sdk_runtime: null });
  });

  it('lane sdk is refused with config_invalid, never run on the core lane', async () => {
    const res = await server.request('POST', '/v1/sessions', { provider: 'claude', lane: 'sdk' });
    const refused = res.status === 201 ? await server.request('POST', `/v1/sessions/${res.body.id}/runs`, { prompt: 'x' }) : res;
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ kind: 'config_invalid' });
  });
});
