/**
 * Backend lanes over HTTP: discovery (`GET /v1/providers`), `POST /v1/providers/{name}/resolve`, and
 * the observability fields on a run's events and result. Whether an SDK loads depends on what is
 * installed, so expectations follow what discovery reports rather than assuming it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RequestBody } from '../../src/client/index.js';
import { reply, startServer, type TestServer } from '../helpers/server.js';

let server: TestServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server.close();
});

const resolve = (name: string, body: RequestBody<'/v1/providers/{name}/resolve', 'post'>) =>
  reply(server.client.POST('/v1/providers/{name}/resolve', { params: { path: { name } }, body }));
// Raw fetch: these bodies are malformed on purpose, which the client's types refuse.
const resolveRaw = (name: string, body: unknown) => server.request('POST', `/v1/providers/${name}/resolve`, body);

describe('backend lanes over HTTP', () => {
  it('reports each provider’s lanes, SDK and capabilities', async () => {
    const providers = (await reply(server.client.GET('/v1/providers'))).body.providers;
    const byName = Object.fromEntries(providers.map((p: any) => [p.name, p]));
    expect(byName.shell).toMatchObject({ lanes: ['core'], sdk_available: false, sdk: null, installed: true });
    expect(byName.claude.capabilities).toEqual(expect.arrayContaining(['approvals', 'interrupt', 'continuation', 'usage', 'cost']));
    for (const p of providers) {
      expect(p.lanes).toEqual(p.sdk ? ['core', 'sdk'] : ['core']);
      if (p.sdk) expect(p.sdk_available).toBe(p.sdk.runtime !== null && p.sdk.error === null);
    }
    expect((await reply(server.client.GET('/v1/providers/{name}', { params: { path: { name: 'claude' } } }))).body.name).toBe('claude');
  });

  it('resolves auto to the SDK exactly when discovery says it loads, and core always to core', async () => {
    const providers = (await reply(server.client.GET('/v1/providers'))).body.providers;
    // Only the fake claude and /bin/sh are installed for this server; the others are refused, whatever the lane.
    for (const provider of providers.filter((p: any) => !p.installed)) {
      for (const lane of ['auto', 'core', 'sdk'] as const) {
        expect((await resolve(provider.name, { lane })).body.error, provider.name).toMatchObject({ kind: 'cli_not_found', details: { binary: provider.binary } });
      }
    }
    for (const provider of providers.filter((p: any) => p.installed)) {
      const auto = await resolve(provider.name, { lane: 'auto' });
      expect(auto.status).toBe(200);
      expect(auto.body).toMatchObject({
        requested_lane: 'auto',
        lane: provider.sdk_available ? 'sdk' : 'core',
        lane_reason: provider.sdk_available ? 'sdk_available' : 'sdk_unavailable',
        execution_mode: 'local',
        queue: provider.default_queue,
        node: 'test-node',
      });
      const core = await resolve(provider.name, { lane: 'core', queue: 'query' });
      expect(core.body).toMatchObject({ lane: 'core', lane_reason: 'explicit_core', queue: 'query', capabilities: provider.capabilities });
      const sdk = await resolve(provider.name, { lane: 'sdk' });
      if (provider.sdk_available) expect(sdk.body).toMatchObject({ lane: 'sdk', lane_reason: 'explicit_sdk', sdk_runtime: provider.sdk.runtime });
      else expect(sdk).toMatchObject({ status: 400, body: { error: { kind: 'config_invalid', details: { field: 'lane', reason: 'sdk_unavailable' } } } });
    }
  });

  it('answers bad requests with the field, and 404 for an unknown provider', async () => {
    expect((await resolve('nope', {})).status).toBe(404);
    const badLane = await resolveRaw('shell', { lane: 'turbo' });
    expect(badLane.status).toBe(400);
    expect(badLane.body.error.details.field).toBe('lane');
    expect((await resolve('shell', { queue: 'nope' })).body.error).toMatchObject({ kind: 'bad_request', details: { field: 'queue' } });
    expect((await resolve('shell', { execution_mode: 'remote_node' })).body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'execution_mode' } });
    expect((await resolveRaw('shell', { extra: 1 })).status).toBe(400);
  });

  it('takes driver_opts, checked as a run\'s remote options are (400 naming the field, never 400 for the key itself)', async () => {
    expect((await resolve('shell', { lane: 'core', driver_opts: { remote_node: 'w1', future_option: true } })).status).toBe(200);
    // On this embedded server remote_node has no worker nodes: refused before its options matter.
    expect((await resolve('shell', { execution_mode: 'remote_node', driver_opts: { remote_node: 'w1' } })).body.error).toMatchObject({
      kind: 'config_invalid',
      details: { field: 'execution_mode', reason: 'distribution_disabled' },
    });
    expect((await resolveRaw('shell', { driver_opts: 'w1' })).body.error).toMatchObject({ details: { field: 'driver_opts' } });
  });

  it('stamps the resolution on every event and on the result of a run', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', lane: 'core' } }))).body;
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo lanes', wait: true }, headers: { 'x-request-id': 'lanes-1' } }))).body;
    // ...and the id of the request that created the run (README "Observability").
    const expected = { ...(await resolve('shell', { lane: 'core' })).body, request_id: 'lanes-1' };
    expect(run.result.metadata).toEqual(expected);
    const events = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id } } }))).body.events;
    expect(events.length).toBeGreaterThan(2);
    for (const event of events) expect(event.metadata).toEqual(expected);
  });
});
