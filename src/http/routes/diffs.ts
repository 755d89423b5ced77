import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AsmApp } from '../../app.js';
import { AsmError } from '../../errors/kinds.js';
import { RunParams, SessionParams } from '../../schemas/api.js';
import { DiffResponse } from '../../schemas/workspace.js';
import type { StoredDiff } from '../../schemas/workspace.js';
import { errorResponses } from './sessions.js';

const DIFF_TYPE = 'text/x-diff';
const PATCH = Type.String({ description: `With \`Accept: ${DIFF_TYPE}\`: the unified patch` });

/**
 * What runs changed in their workspaces (sessions/run-diffs.ts): a run's diff, kept when it ended, and
 * the session's since its first run started, as of its latest run's end. JSON by default (the file
 * list with +/- counts); the unified patch with `Accept: text/x-diff`.
 */
export const diffRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp }> = async (fastify, { app }) => {
  const { sessions, store } = app;
  const response = { 200: Type.Union([DiffResponse, PATCH]), ...errorResponses };

  fastify.get(
    '/runs/:id/diff',
    {
      schema: {
        tags: ['workspaces'],
        description: `What the run changed in its workspace, computed where it ran when it ended. JSON, or the unified patch with \`Accept: ${DIFF_TYPE}\`. 404 while the run has not ended, or when no diff was kept (ASM_WORKSPACE_DIFFS off).`,
        params: RunParams,
        response,
      },
    },
    async (request, reply) => {
      const run = await sessions.getRun(request.tenant, request.params.id);
      const diff = await store.diffs.get(run.id);
      if (!diff) throw new AsmError('not_found', `run ${run.id} has no workspace diff (it has not ended, or no diff was kept)`);
      return answer(request, reply, diff);
    },
  );

  fastify.get(
    '/sessions/:id/diff',
    {
      schema: {
        tags: ['workspaces'],
        description: `What the session's runs changed in its workspace since its first run started, as of its latest run's end. JSON, or the unified patch with \`Accept: ${DIFF_TYPE}\`. 404 before a run ended.`,
        params: SessionParams,
        response,
      },
    },
    async (request, reply) => {
      const session = await sessions.getSession(request.tenant, request.params.id);
      const diff = await store.diffs.get(session.id);
      if (!diff) throw new AsmError('not_found', `session ${session.id} has no workspace diff yet (no run has ended, or no diff was kept)`);
      return answer(request, reply, diff);
    },
  );
};

function answer(request: FastifyRequest, reply: FastifyReply, diff: StoredDiff) {
  if (!request.headers.accept?.includes(DIFF_TYPE)) return { summary: diff.summary, patch_truncated: diff.patch === null, computed_at: diff.computed_at };
  if (diff.patch === null) throw new AsmError('payload_too_large', 'the patch exceeded ASM_DIFF_MAX_BYTES and was not kept; the JSON summary lists the files');
  return reply.type(`${DIFF_TYPE}; charset=utf-8`).send(diff.patch);
}
