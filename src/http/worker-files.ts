import { timingSafeEqual } from 'node:crypto';
import { basename, dirname } from 'node:path';
import type { Readable } from 'node:stream';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { AsmApp } from '../app.js';
import { resolveWorkspaceDir } from '../backends/workspace.js';
import { LocalWorkspace } from '../backends/workspace-access.js';
import { budget, pathNames, WorkspaceFiles, type Budget } from '../backends/workspace-files.js';
import { AsmError, badField } from '../errors/kinds.js';
import { FOLDER_HEADER, WORKER_FILES_PATH, type WorkerFilesOp } from '../nodes/worker-files.js';
import type { WorkspaceSpec } from '../schemas/workspace.js';
import { makeSessionWorkspace } from '../sessions/session-workspace.js';
import { registerErrorHandling } from './errors.js';
import { rawBodies, streamed } from './streamed-body.js';

type Query = Record<string, string | undefined>;
/** A session id as the API makes them: it names the worker's shadow repository folder. */
const SESSION_ID = /^ses_[A-Za-z0-9_-]{1,64}$/;
/** The largest body of `create`: a workspace spec, whose URL and ref the API's schema bounds far below this. */
const SPEC_BYTES = 64 * 1024;

/**
 * A worker's files endpoint (`asm worker --files-port`): the API processes' way to the workspaces of
 * the remote_node sessions this node holds (nodes/worker-files.ts is the caller). Not for tenants:
 * every request carries the bearer token this instance drew at start (published only in its Redis
 * heartbeat). Each operation is the files API's own (LocalWorkspace), confined to the session's cwd
 * on this node, its path checked again here; uploads are bounded by the budget the API computed.
 */
export async function buildWorkerFilesServer(app: AsmApp, token: string): Promise<FastifyInstance> {
  const fastify = Fastify({ loggerInstance: app.logger as FastifyBaseLogger, forceCloseConnections: true });
  registerErrorHandling(fastify);
  rawBodies(fastify);
  const expected = Buffer.from(`Bearer ${token}`);
  fastify.addHook('onRequest', async (request) => {
    const given = Buffer.from(request.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AsmError('unauthorized', 'the files endpoint of a worker is for the API processes of its deployment');
  });

  const workspaceOf = async (query: Query) => {
    let cwd: string;
    try {
      cwd = await resolveWorkspaceDir(app.config.workspaceRoot, query.cwd ?? '.');
    } catch (err) {
      const error = AsmError.from(err);
      throw new AsmError(error.kind, `driver_opts.remote_cwd on node ${app.config.nodeName}: ${error.message}`, { details: { field: 'driver_opts.remote_cwd' } });
    }
    return { cwd, files: new LocalWorkspace(await WorkspaceFiles.at(cwd)) };
  };
  /** An upload: its bytes within the budget; then the session's next snapshot is prepared here, where its runs diff. */
  const upload = <T>(request: FastifyRequest<{ Querystring: Query }>, work: (files: LocalWorkspace, body: Readable, left: Budget) => Promise<T>) =>
    streamed(request, async (body) => {
      const { query } = request;
      const { cwd, files } = await workspaceOf(query);
      const done = await work(files, body, budget(count(query, 'bytes'), count(query, 'files')));
      if (query.session && SESSION_ID.test(query.session)) app.sessions.primeSnapshot(query.session, cwd);
      return done;
    });
  const field = (query: Query) => query.field ?? 'path';
  const names = (query: Query) => pathNames(query.path ?? '', field(query));

  const handlers: Record<WorkerFilesOp, (request: FastifyRequest<{ Querystring: Query }>, reply: FastifyReply) => Promise<unknown>> = {
    list: async ({ query }) => (await workspaceOf(query)).files.list(names(query), field(query), count(query, 'limit'), query.after),
    pack: async ({ query }, reply) => reply.type('application/x-tar').send(await (await workspaceOf(query)).files.pack(names(query), field(query))),
    read: async ({ query }, reply) => {
      const opened = await (await workspaceOf(query)).files.read(names(query), field(query));
      if (opened === 'folder') return reply.header(FOLDER_HEADER, '1').send();
      return reply.type('application/octet-stream').header('content-length', opened.size).send(opened.stream);
    },
    write: async (request) => ({ bytes: await upload(request, (files, body, left) => files.write(names(request.query), body, left, field(request.query))) }),
    extract: (request) => upload(request, (files, body, left) => files.extract(names(request.query), body, left)),
    create: async (request) => {
      const { query } = request;
      const session = query.session ?? '';
      // The folder is the session's own, named after it, as a local session's is (sessions/session-workspace.ts).
      if (!SESSION_ID.test(session) || basename(query.cwd ?? '') !== session) throw badField('query.cwd', 'must end in the session id');
      const spec = await streamed(request, (body) => specOf(body));
      const parent = await (await WorkspaceFiles.at(app.config.workspaceRoot)).folder(pathNames(dirname(query.cwd!), 'workspace'), 'workspace', true);
      const dir = await makeSessionWorkspace(parent, session, spec, app.config.workspaces);
      app.sessions.primeSnapshot(session, dir);
      return { cwd: query.cwd };
    },
  };
  for (const [op, handler] of Object.entries(handlers)) {
    fastify.route<{ Querystring: Query }>({ method: op === 'write' || op === 'extract' || op === 'create' ? 'POST' : 'GET', url: `${WORKER_FILES_PATH}/${op}`, handler });
  }
  return fastify;
}

/** A non-negative integer of the query (the API sends them). */
function count(query: Query, key: string): number {
  const value = Number(query[key]);
  if (!Number.isSafeInteger(value) || value < 0) throw badField(`query.${key}`, 'must be a non-negative integer');
  return value;
}

/** The workspace spec of a `create` (the API checked it against its schema; here only its shape). */
async function specOf(body: Readable): Promise<WorkspaceSpec> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > SPEC_BYTES) throw new AsmError('payload_too_large', `workspace: larger than ${SPEC_BYTES} bytes`, { details: { field: 'workspace' } });
    chunks.push(chunk as Buffer);
  }
  let spec: unknown;
  try {
    spec = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw badField('workspace', 'is not JSON');
  }
  const git = (spec as { git?: { url?: unknown; ref?: unknown } } | null)?.git;
  if (git !== undefined && (typeof git?.url !== 'string' || (git.ref !== undefined && typeof git.ref !== 'string'))) throw badField('workspace.git', 'needs a url (and optionally a ref) as strings');
  if (git === undefined && (spec as { archive_upload?: unknown } | null)?.archive_upload !== true) throw badField('workspace', 'is neither {git} nor {archive_upload: true}');
  return spec as WorkspaceSpec;
}
