import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { randomUUID } from 'node:crypto';
import { VERSION, type AsmApp } from '../app.js';
import { SHARED_SCHEMAS } from '../schemas/api.js';
import { WS_MAX_CLIENT_FRAME_BYTES } from '../schemas/ws.js';
import { AccessLog } from './access-log.js';
import { registerAuth } from './auth.js';
import { registerBrowserSafety } from './browser-safety.js';
import { frameworkErrors, registerErrorHandling } from './errors.js';
import { AsmMetrics } from './metrics.js';
import { compileSerializersFromSchemas } from './serializers.js';
import { registerRateLimit } from './rate-limit.js';
import { approvalRoutes } from './routes/approvals.js';
import { diffRoutes } from './routes/diffs.js';
import { fileRoutes } from './routes/files.js';
import { eventStreamRoutes } from './routes/events-ws.js';
import { queueRoutes } from './routes/queues.js';
import { runRoutes } from './routes/runs.js';
import { sessionRoutes } from './routes/sessions.js';
import { systemRoutes } from './routes/system.js';
import { registerTracing } from './tracing.js';
import { typeboxValidatorCompiler } from './validation.js';

/** What a client's x-request-id may be, to be kept as the request's id in the logs and the answer. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The client's x-request-id when it is a plain token; anything else (which would go into the logs as is) is replaced by a new id. */
function requestIdOf(header: string | string[] | undefined): string {
  return typeof header === 'string' && REQUEST_ID.test(header) ? header : randomUUID();
}

/** The HTTP and WebSocket face of an AsmApp. Routes are encapsulated plugins; the schemas drive validation and OpenAPI. */
export async function buildServer(app: AsmApp): Promise<FastifyInstance> {
  const fastify = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast only stops the server type from being specialised to it.
    loggerInstance: app.logger as FastifyBaseLogger,
    bodyLimit: app.config.limits.bodyBytes,
    genReqId: (req) => requestIdOf(req.headers['x-request-id']),
    requestIdHeader: false,
    logController: new AccessLog(app.config.accessLog),
    return503OnClosing: true,
    forceCloseConnections: true,
    // The longest path parameter the schemas accept (ids); longer ones are refused before routing.
    routerOptions: { maxParamLength: 128 },
    frameworkErrors,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // The API speaks JSON only: a text/plain body is refused with 415 rather than parsed as a string.
  fastify.removeContentTypeParser('text/plain');

  fastify.setValidatorCompiler(typeboxValidatorCompiler);
  // First of all hooks, so that every answer (errors included) carries the id. Hooks here take `done`
  // rather than being async: a promise per hook per request is measurable on the request path
  // (bench/RESULTS.md issue 14).
  fastify.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });
  registerErrorHandling(fastify);
  registerTracing(fastify);
  // One registry per server (metrics.ts); none at all with ASM_METRICS=off.
  const metrics = app.config.metrics ? new AsmMetrics(app) : undefined;
  metrics?.observeRequestsOf(fastify);
  // Before auth: the plugin's onRequest hook marks upgrade requests, so a refused upgrade (401) gets its
  // socket destroyed after the response instead of left open, which also kept server.close() waiting.
  await fastify.register(websocket, { options: { maxPayload: WS_MAX_CLIENT_FRAME_BYTES } });
  registerBrowserSafety(fastify, { allowedOrigins: app.config.allowedOrigins, keyless: app.tenants.keyless });
  registerAuth(fastify, app.tenants);
  await registerRateLimit(fastify, app);

  for (const schema of SHARED_SCHEMAS) fastify.addSchema(schema);
  compileSerializersFromSchemas(fastify);
  await fastify.register(swagger, {
    // Shared schemas become named components (#/components/schemas/Session, …) instead of numbered defs.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'ASM — Agent Session Manager',
        version: VERSION,
        description:
          'Runs coding-agent CLIs as managed sessions. Live events stream over the WebSocket GET /v1/events (see README) and over SSE on GET /v1/runs/{id}/events.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await fastify.register(swaggerUi, { routePrefix: '/docs' });

  await fastify.register(systemRoutes, { app, metrics });
  await fastify.register(sessionRoutes, { app, prefix: '/v1' });
  await fastify.register(runRoutes, { app, metrics, prefix: '/v1' });
  await fastify.register(diffRoutes, { app, prefix: '/v1' });
  await fastify.register(fileRoutes, { app, prefix: '/v1' });
  await fastify.register(approvalRoutes, { app, prefix: '/v1' });
  await fastify.register(queueRoutes, { app, prefix: '/v1' });
  await fastify.register(eventStreamRoutes, { app, metrics, prefix: '/v1' });
  fastify.get('/openapi.json', { schema: { hide: true } }, async () => fastify.swagger());
  return fastify;
}
