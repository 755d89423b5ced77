import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { AsmApp } from '../../app.js';
import { Approval, DecideApprovalBody } from '../../schemas/api.js';
import { errorResponses } from './sessions.js';

const ApprovalParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) });

export const approvalRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp }> = async (fastify, { app }) => {
  fastify.get(
    '/approvals/:id',
    {
      schema: {
        tags: ['approvals'],
        description: 'An approval, pending or resolved (with its decision and reason: a client that reconnects learns what became of it).',
        params: ApprovalParams,
        response: { 200: Type.Ref(Approval), ...errorResponses },
      },
    },
    async (request) => app.sessions.getApproval(request.tenant, request.params.id),
  );

  fastify.post(
    '/approvals/:id',
    {
      schema: {
        tags: ['approvals'],
        description: 'Decide a pending approval; the decision reaches the CLI. 404 for an unknown id, 409 if it was already decided (or timed out).',
        params: ApprovalParams,
        body: DecideApprovalBody,
        response: { 200: Type.Ref(Approval), ...errorResponses },
      },
    },
    async (request) => app.sessions.decideApproval(request.tenant, request.params.id, request.body.decision, request.body.reason ?? null),
  );
};
