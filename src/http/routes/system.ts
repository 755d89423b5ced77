import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { AsmApp } from '../../app.js';
import { spawnerInUse } from '../../backends/spawn-child.js';
import { AsmError } from '../../errors/kinds.js';
import { binaryVariable, probeVersion, resolveBinary } from '../../providers/registry.js';
import type { ProviderDefinition } from '../../providers/types.js';
import { ErrorResponse, Health, LaneInfo, NodeList, PageQuery, ProviderInfo, ProviderList, ProviderParams, ResolveLaneBody } from '../../schemas/api.js';
import { LaneMetadata } from '../../schemas/events.js';
import { pageOf } from '../../store/paging.js';
import { adminOnly } from '../auth.js';
import type { AsmMetrics } from '../metrics.js';
import { errorResponses, pageRequest } from './sessions.js';

/** Probing a CLI spawns it, so discovery answers from a short-lived cache. */
const PROBE_TTL_MS = 30_000;

export const systemRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp; metrics?: AsmMetrics }> = async (fastify, { app, metrics }) => {
  const probes = new Map<string, { at: number; value: Promise<{ installed: boolean; version: string | null }> }>();
  const probe = (def: ProviderDefinition) => {
    const cached = probes.get(def.name);
    if (cached && Date.now() - cached.at < PROBE_TTL_MS) return cached.value;
    const value = probeVersion(def, resolveBinary(def, app.config.binaries));
    probes.set(def.name, { at: Date.now(), value });
    return value;
  };
  const describe = async (def: ProviderDefinition) => {
    const [{ installed, version }, sdk] = await Promise.all([probe(def), app.sdks.status(def)]);
    const cliMissing = `the CLI it drives, ${resolveBinary(def, app.config.binaries)}, is not found (${binaryVariable(def)})`;
    return {
      name: def.name,
      display_name: def.displayName,
      binary: resolveBinary(def, app.config.binaries),
      installed,
      version,
      enabled: !app.config.disabledProviders.has(def.name),
      default_queue: def.defaultQueue,
      capabilities: def.capabilities,
      permission_modes: def.permissionModes,
      provider_permission_modes: [...def.nativePermissionModes],
      options: {
        system_prompt: def.options.system_prompt === true,
        max_turns: def.options.max_turns === true,
        reasoning_effort: [...(def.options.reasoning_effort ?? [])],
        continuation_latest: def.options.continuation_latest === true,
      },
      lanes: def.sdk ? ['core', 'sdk'] : ['core'],
      // The SDK drives the same CLI (providers/types.ts SdkRunInput), so it can run only where the CLI is found.
      sdk_available: sdk.available && installed,
      sdk: def.sdk ? { package: def.sdk.package, runtime: sdk.runtime, capabilities: def.sdk.capabilities, error: sdk.error ?? (installed ? null : cliMissing) } : null,
    };
  };
  const lanesOf = async (def: ProviderDefinition) => {
    const info = await describe(def);
    const core = { lane: 'core' as const, available: info.installed, execution_modes: ['local' as const, 'remote_node' as const], capabilities: def.capabilities, runtime: info.version, error: info.installed ? null : `${info.binary} is not found (${binaryVariable(def)})` };
    const sdk = info.sdk && { lane: 'sdk' as const, available: info.sdk_available, execution_modes: ['local' as const], capabilities: info.sdk.capabilities, runtime: info.sdk.runtime, error: info.sdk_available ? null : info.sdk.error };
    return { provider: def.name, preferred_lane: info.sdk_available ? 'sdk' : 'core', lanes: sdk ? [core, sdk] : [core] };
  };

  // An admin sees every provider of this build (with `enabled`); a tenant only those it may use.
  const visible = (request: FastifyRequest, def: ProviderDefinition) => request.role === 'admin' || app.tenants.get(request.tenant).providers.has(def.name);
  const visibleProvider = (request: FastifyRequest, name: string) => {
    const def = app.providers.get(name);
    if (!def || !visible(request, def)) throw new AsmError('not_found', `provider ${name} not found`);
    return def;
  };

  fastify.get(
    '/v1/providers',
    {
      schema: {
        tags: ['providers'],
        description: 'For a tenant, the providers it may use; for an admin, every provider.',
        querystring: PageQuery,
        response: { 200: ProviderList, ...errorResponses },
      },
    },
    async (request) => {
      // Only the page's providers are probed.
      const page = pageOf([...app.providers.values()].filter((def) => visible(request, def)), pageRequest(request.query));
      return { providers: await Promise.all(page.items.map(describe)), next_cursor: page.next };
    },
  );

  fastify.get('/v1/providers/:name', { schema: { tags: ['providers'], params: ProviderParams, response: { 200: Type.Ref(ProviderInfo), ...errorResponses } } }, async (request) =>
    describe(visibleProvider(request, request.params.name)),
  );

  fastify.get(
    '/v1/providers/:name/lanes',
    {
      schema: {
        tags: ['providers'],
        description:
          'The backend lanes of a provider and whether each can run here, without execution-mode checks (lane_info). POST /v1/providers/{name}/resolve answers for a real run.',
        params: ProviderParams,
        response: { 200: Type.Ref(LaneInfo), ...errorResponses },
      },
    },
    async (request) => lanesOf(visibleProvider(request, request.params.name)),
  );

  fastify.post(
    '/v1/providers/:name/resolve',
    {
      schema: {
        tags: ['providers'],
        description:
          'Which backend lane a run with these options would execute on, and why: the observability fields every event and result of such a run carries. driver_opts are resolved and checked as a run\'s (remote options). 400 config_invalid when no lane can serve it (sdk requested but not loadable, sdk with remote_node, sdk lacking a capability permission_mode needs, remote_node without worker nodes); cli_not_found when the CLI is missing where the run would execute.',
        params: ProviderParams,
        body: ResolveLaneBody,
        response: { 200: Type.Ref(LaneMetadata), ...errorResponses },
      },
    },
    async (request) => {
      const body = request.body ?? {};
      visibleProvider(request, request.params.name);
      return app.sessions.resolveLane(request.params.name, body);
    },
  );

  // Node details (names, load, capacity) describe the whole deployment: admins only, as /metrics.
  fastify.get(
    '/v1/nodes',
    {
      onRequest: adminOnly,
      schema: {
        tags: ['nodes'],
        description:
          'Live instances of this deployment: in embedded mode this process, in distributed mode every API process and `asm worker` with a current heartbeat. Admins only (403 for a tenant).',
        querystring: PageQuery,
        response: { 200: NodeList, ...errorResponses },
      },
    },
    async (request) => {
      const page = pageOf(await app.cluster.nodes(), pageRequest(request.query));
      // A worker's cookie hash and files token stay internal: what runs and file requests are checked against.
      return { nodes: page.items.map(({ cookie: _cookie, files_token: _token, ...node }) => node), next_cursor: page.next };
    },
  );

  // Health probes answer without a key (auth.ts PUBLIC_PREFIXES): `security: []` says so in the OpenAPI document.
  fastify.get('/healthz', { schema: { tags: ['health'], security: [], response: { 200: Health } } }, async () => ({ status: 'ok' }));

  // Ready means: not draining, and the store answers (in distributed mode, Redis is reachable). The
  // sandbox was checked at start-up; its kind is reported so a probe can tell an unsandboxed node, and
  // the spawner one whose native/spawn.c did not load (README "How child processes start").
  fastify.get('/readyz', { schema: { tags: ['health'], security: [], response: { 200: Health, 503: Health } } }, async (_request, reply) => {
    if (!app.isReady()) return reply.status(503).send({ status: 'draining' });
    try {
      await app.store.ping();
    } catch (err) {
      return reply.status(503).send({ status: 'not_ready', checks: { store: AsmError.from(err).message } });
    }
    return { status: 'ready', checks: { store: 'ok', mode: app.mode, sandbox: app.sandbox.kind, spawner: spawnerInUse() } };
  });

  if (metrics) {
    fastify.get(
      '/metrics',
      {
        onRequest: adminOnly,
        schema: {
          tags: ['health'],
          description: 'Prometheus text exposition of this process (README "Observability"). Admins only (403 for a tenant). Absent with ASM_METRICS=off.',
          response: { 200: Type.String(), 401: Type.Ref(ErrorResponse), 403: Type.Ref(ErrorResponse) },
        },
      },
      async (_request, reply) => {
        reply.type(metrics.contentType);
        return metrics.render();
      },
    );
  }
};
