import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { AsmApp } from '../../app.js';
import { pageOf, type PageRequest } from '../../store/paging.js';
import {
  ApprovalList,
  CreateRunBody,
  CreateSessionBody,
  ErrorResponse,
  isTerminalRunState,
  PAGE_DEFAULT,
  PageQuery,
  Run,
  RunList,
  Session,
  SessionList,
  SessionParams,
} from '../../schemas/api.js';

const error = Type.Ref(ErrorResponse);
const errors = { 400: error, 401: error, 403: error, 404: error, 409: error, 413: error, 429: error, 503: error };

export const sessionRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp }> = async (fastify, { app }) => {
  const { sessions } = app;

  fastify.post('/sessions', { schema: { tags: ['sessions'], body: CreateSessionBody, response: { 201: Type.Ref(Session), ...errors } } }, async (request, reply) => {
    const session = await sessions.createSession(request.tenant, request.body, { requestId: request.id });
    return reply.status(201).send(session);
  });

  fastify.get('/sessions', { schema: { tags: ['sessions'], querystring: PageQuery, response: { 200: SessionList, ...errors } } }, async (request) => {
    const page = await sessions.listSessions(request.tenant, pageRequest(request.query));
    return { sessions: page.items, next_cursor: page.next };
  });

  fastify.get('/sessions/:id', { schema: { tags: ['sessions'], params: SessionParams, response: { 200: Type.Ref(Session), ...errors } } }, async (request) =>
    sessions.getSession(request.tenant, request.params.id),
  );

  fastify.delete(
    '/sessions/:id',
    {
      schema: {
        tags: ['sessions'],
        description: 'Close the session: queued runs end interrupted, active runs are interrupted, then the session is closed.',
        params: SessionParams,
        response: { 200: Type.Ref(Session), ...errors },
      },
    },
    async (request) => sessions.closeSession(request.tenant, request.params.id, { requestId: request.id }),
  );

  fastify.post(
    '/sessions/:id/runs',
    {
      schema: {
        tags: ['runs'],
        description: 'Submit a prompt. 202 with the queued run, or with `wait: true` 200 with the finished run and its result (202 if it is still going after ASM_WAIT_MAX_MS).',
        params: SessionParams,
        body: CreateRunBody,
        response: { 200: Type.Ref(Run), 202: Type.Ref(Run), ...errors },
      },
    },
    async (request, reply) => {
      const origin = { requestId: request.id };
      if (!request.body.wait) return reply.status(202).send(await sessions.submitRun(request.tenant, request.params.id, request.body, origin));
      const finished = await sessions.submitRunAndWait(request.tenant, request.params.id, request.body, app.config.limits.waitMaxMs, origin);
      return reply.status(isTerminalRunState(finished.state) ? 200 : 202).send(finished);
    },
  );

  fastify.get(
    '/sessions/:id/runs',
    { schema: { tags: ['runs'], params: SessionParams, querystring: PageQuery, response: { 200: RunList, ...errors } } },
    async (request) => {
      const page = await sessions.listRuns(request.tenant, request.params.id, pageRequest(request.query));
      return { runs: page.items, next_cursor: page.next };
    },
  );

  fastify.get(
    '/sessions/:id/approvals',
    {
      schema: { tags: ['approvals'], description: 'Pending approvals of the session', params: SessionParams, querystring: PageQuery, response: { 200: ApprovalList, ...errors } },
    },
    async (request) => {
      const page = pageOf(await sessions.listPendingApprovals(request.tenant, request.params.id), pageRequest(request.query));
      return { approvals: page.items, next_cursor: page.next };
    },
  );
};

export { errors as errorResponses };

/** A list route's query as the store's page request. */
export function pageRequest(query: PageQuery): PageRequest {
  return { limit: query.limit ?? PAGE_DEFAULT, cursor: query.cursor };
}
