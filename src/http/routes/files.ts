import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Readable } from 'node:stream';
import type { AsmApp } from '../../app.js';
import { pathNames } from '../../backends/workspace-files.js';
import { AsmError, badField } from '../../errors/kinds.js';
import { SessionParams } from '../../schemas/api.js';
import { FileListing, FilesQuery, UploadResult } from '../../schemas/workspace.js';
import { decodeCursor, encodeCursor } from '../../store/paging.js';
import { rawBodies, streamed } from '../streamed-body.js';
import { errorResponses } from './sessions.js';

const TAR = 'application/x-tar';
const FileParams = Type.Object({ id: SessionParams.properties.id, '*': Type.String({ maxLength: 4096, description: 'A path relative to the workspace' }) });
const UploadQuery = Type.Object({ path: Type.Optional(Type.String({ maxLength: 4096, description: 'The folder to unpack into, relative to the workspace' })) }, { additionalProperties: false });
const BINARY = Type.Unsafe<Readable>({ type: 'string', format: 'binary', description: 'The file\'s bytes, or a tar archive' });
const DEFAULT_PAGE = 100;

/**
 * A session's files, confined to its workspace (backends/workspace-files.ts): one file in or out, a
 * tar (or tar.gz) archive in, a folder's listing or a tar of it out. Bodies are streamed to disk as
 * they arrive, never held whole; what one upload writes is bounded (sessions/session-files.ts). For
 * a remote_node session the same is done on the worker that holds its workspace (nodes/worker-files.ts).
 */
export const fileRoutes: FastifyPluginAsyncTypebox<{ app: AsmApp }> = async (fastify, { app }) => {
  const { sessions } = app;
  rawBodies(fastify);

  const workspaceOf = async (tenant: string, id: string) => sessions.files.workspace(await sessions.getSession(tenant, id));
  // A local session's upload primes its next snapshot here; a worker primes its own (http/worker-files.ts).
  const uploaded = async (tenant: string, id: string) => {
    const session = await sessions.getSession(tenant, id);
    if (session.execution_mode === 'local') sessions.primeSnapshot(session.id, session.cwd);
  };

  fastify.get(
    '/sessions/:id/files',
    {
      schema: {
        tags: ['workspaces'],
        description: `A folder of the session's workspace (\`path\`, the workspace itself by default): its entries by name, a page at a time; with \`Accept: ${TAR}\`, the folder as a tar archive.`,
        params: SessionParams,
        querystring: FilesQuery,
        response: { 200: Type.Union([FileListing, BINARY]), ...errorResponses },
      },
    },
    async (request, reply) => {
      const files = await workspaceOf(request.tenant, request.params.id);
      const names = pathNames(request.query.path ?? '', 'query.path');
      if (request.headers.accept?.includes(TAR)) return reply.type(TAR).send(await files.pack(names, 'query.path'));
      const max = app.config.workspaces.listPageMax;
      const limit = request.query.limit ?? Math.min(DEFAULT_PAGE, max);
      if (limit > max) throw badField('query.limit', `must be at most ${max} (ASM_FILES_PAGE_MAX)`);
      const after = decodeCursor(request.query.cursor, (v): v is { after: string } => typeof (v as { after?: unknown })?.after === 'string');
      const page = await files.list(names, 'query.path', limit, after?.after);
      return { path: names.join('/'), entries: page.entries, next_cursor: page.last === null ? null : encodeCursor({ after: page.last }) };
    },
  );

  fastify.post(
    '/sessions/:id/files',
    {
      schema: {
        tags: ['workspaces'],
        description: `Unpacks a tar or tar.gz archive (the body, any content type) into the workspace, or into its folder \`path\`. Absolute names, \`..\`, hard links, devices and symlinks out of the workspace are refused (403); past the tenant's upload bounds, 413.`,
        params: SessionParams,
        querystring: UploadQuery,
        response: { 201: UploadResult, ...errorResponses },
      },
    },
    async (request, reply) => {
      const files = await workspaceOf(request.tenant, request.params.id);
      const into = pathNames(request.query.path ?? '', 'query.path');
      const result = await streamed(request, (body) => files.extract(into, body, sessions.files.uploadBudget(request.tenant)));
      await uploaded(request.tenant, request.params.id);
      return reply.status(201).send(result);
    },
  );

  fastify.put(
    '/sessions/:id/files/*',
    {
      schema: {
        tags: ['workspaces'],
        description: 'Writes one file (the body, any content type) at the path, making its folders; a symlink on the path is refused (403); past the tenant\'s upload bound, 413.',
        params: FileParams,
        response: { 201: UploadResult, ...errorResponses },
      },
    },
    async (request, reply) => {
      const files = await workspaceOf(request.tenant, request.params.id);
      const names = pathNames(request.params['*'], 'path');
      const left = sessions.files.uploadBudget(request.tenant);
      const bytes = await streamed(request, (body) => files.write(names, body, left, 'path'));
      await uploaded(request.tenant, request.params.id);
      return reply.status(201).send({ files: 1, directories: 0, bytes });
    },
  );

  fastify.get(
    '/sessions/:id/files/*',
    {
      schema: {
        tags: ['workspaces'],
        description: `Downloads one file of the workspace; a folder only as a tar archive (\`Accept: ${TAR}\`).`,
        params: FileParams,
        response: { 200: BINARY, ...errorResponses },
      },
    },
    async (request, reply) => {
      const files = await workspaceOf(request.tenant, request.params.id);
      const names = pathNames(request.params['*'], 'path');
      const opened = await files.read(names, 'path');
      if (opened === 'folder') {
        if (!request.headers.accept?.includes(TAR)) throw new AsmError('conflict', `path: ${names.join('/')} is a folder: list it with GET /v1/sessions/{id}/files?path=, or ask for Accept: ${TAR}`, { details: { field: 'path' } });
        return reply.type(TAR).send(await files.pack(names, 'path'));
      }
      return reply.type('application/octet-stream').header('content-length', opened.size).send(opened.stream);
    },
  );
};
