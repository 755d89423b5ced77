import { Readable } from 'node:stream';
import type { FileDownload, WorkspaceAccess } from '../backends/workspace-access.js';
import type { Budget } from '../backends/workspace-files.js';
import { AsmError, type ErrorBody } from '../errors/kinds.js';
import type { FileEntry, UploadResult, WorkspaceSpec } from '../schemas/workspace.js';
import type { RemoteOptions } from '../store/types.js';
import type { Cluster, NodeSnapshot } from './cluster.js';
import { remoteTarget } from './remote-options.js';
import { cookieHash } from './remote-start.js';

/**
 * The files of a remote_node session's workspace, on the worker that holds it: the node the session
 * names in driver_opts.remote_node (a pool has no one such node: refused). The worker serves them on
 * its files endpoint (asm worker --files-port; http/worker-files.ts), which does each operation with
 * the same LocalWorkspace as a local session's, confined to the run's cwd on that node. Bodies stream
 * through in both directions (HTTP flow control bounds what is in flight); the endpoint takes a
 * bearer token each worker instance draws at start and publishes only in its Redis heartbeat.
 */

/** The path of the worker's internal files endpoint; the operation follows it. */
export const WORKER_FILES_PATH = '/internal/files';
/** Answered by the worker's `read` when the path is a folder (the body is then empty). */
export const FOLDER_HEADER = 'x-asm-folder';
export type WorkerFilesOp = 'list' | 'pack' | 'read' | 'write' | 'extract' | 'create';

/**
 * The live worker instance holding the session's workspace, with its files endpoint. `field` is the
 * request field a refusal names: the files API's is driver_opts.remote_node, a new session's
 * `workspace` its own.
 */
export async function filesNodeOf(cluster: Cluster, options: RemoteOptions, field = 'driver_opts.remote_node'): Promise<NodeSnapshot & { files_url: string; files_token: string }> {
  const target = remoteTarget(options.remote_node);
  if (target.kind === 'pool') {
    throw new AsmError('conflict', `${field}: the session's runs go to any worker of pool ${target.pool}, so no one worker holds its workspace; name a node in driver_opts.remote_node`, {
      details: { field },
    });
  }
  const named = (await cluster.nodes()).filter((n) => n.role === 'worker' && n.name === target.name);
  if (named.length === 0) throw new AsmError('connection_failed', `node ${target.name}, which holds the session's workspace, is not live`, { details: { node: target.name } });
  const trusted = named.filter((n) => (n.cookie ?? null) === cookieHash(options.remote_cookie));
  if (trusted.length === 0) throw new AsmError('forbidden', `driver_opts.remote_cookie does not match the cookie of node ${target.name}`, { details: { field: 'driver_opts.remote_cookie' } });
  // The newest instance of the name (nodes() lists them by start).
  const serving = trusted.filter((n): n is NodeSnapshot & { files_url: string; files_token: string } => !!n.files_url && !!n.files_token).at(-1);
  if (!serving) throw new AsmError('conflict', `${field}: node ${target.name} serves no files endpoint (asm worker --files-port)`, { details: { field, node: target.name } });
  return serving;
}

export class RemoteWorkspace implements WorkspaceAccess {
  constructor(
    private readonly node: { name: string; files_url: string; files_token: string },
    /** The workspace on that node: remote_cwd, relative to the worker's workspace root. */
    private readonly cwd: string,
    /** The session: the worker primes its snapshot after an upload. */
    private readonly sessionId: string,
  ) {}

  async list(names: string[], field: string, limit: number, after: string | undefined): Promise<{ entries: FileEntry[]; last: string | null }> {
    const res = await this.call('list', { path: names.join('/'), field, limit: String(limit), ...(after !== undefined && { after }) });
    return (await res.json()) as { entries: FileEntry[]; last: string | null };
  }

  async pack(names: string[], field: string): Promise<Readable> {
    return bodyOf(await this.call('pack', { path: names.join('/'), field }));
  }

  async read(names: string[], field: string): Promise<FileDownload | 'folder'> {
    const res = await this.call('read', { path: names.join('/'), field });
    if (res.headers.get(FOLDER_HEADER)) {
      await res.body?.cancel();
      return 'folder';
    }
    return { stream: bodyOf(res), size: Number(res.headers.get('content-length') ?? 0) };
  }

  async write(names: string[], body: Readable, left: Budget, field: string): Promise<number> {
    const res = await this.call('write', { path: names.join('/'), field, session: this.sessionId, ...budgetQuery(left) }, body);
    return ((await res.json()) as { bytes: number }).bytes;
  }

  async extract(into: string[], body: Readable, left: Budget): Promise<UploadResult> {
    const res = await this.call('extract', { path: into.join('/'), session: this.sessionId, ...budgetQuery(left) }, body);
    return (await res.json()) as UploadResult;
  }

  /**
   * Makes the session's own workspace on the worker: the folder `cwd` (its parents inside the
   * worker's root as needed), empty or a clone of `spec.git` under the worker's URL policy and git
   * timeout. The spec goes in the body, so a URL's credentials are in no request line or log.
   */
  async create(spec: WorkspaceSpec): Promise<void> {
    await this.call('create', { session: this.sessionId }, JSON.stringify(spec));
  }

  /** One request to the worker; its refusal (an error body) is thrown as the AsmError it carries. */
  private async call(op: WorkerFilesOp, query: Record<string, string>, body?: Readable | string): Promise<Response> {
    const url = `${this.node.files_url}${WORKER_FILES_PATH}/${op}?${new URLSearchParams({ cwd: this.cwd, ...query })}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method: body !== undefined ? 'POST' : 'GET',
        headers: { authorization: `Bearer ${this.node.files_token}`, ...(body !== undefined && { 'content-type': typeof body === 'string' ? 'application/json' : 'application/octet-stream' }) },
        // The upload streams to the worker as it arrives (undici takes a Node stream as an async iterable).
        ...(body !== undefined && { body: body as unknown as ReadableStream, duplex: 'half' }),
      } as RequestInit);
    } catch (err) {
      throw new AsmError('connection_failed', `the files endpoint of node ${this.node.name} did not answer: ${(err as Error).message}`, { details: { node: this.node.name } });
    }
    if (res.ok) return res;
    const answer = (await res.json().catch(() => null)) as { error?: ErrorBody } | null;
    if (answer?.error?.kind) throw AsmError.fromBody(answer.error);
    throw new AsmError('connection_failed', `the files endpoint of node ${this.node.name} answered ${res.status}`, { details: { node: this.node.name } });
  }
}

function budgetQuery(left: Budget): Record<string, string> {
  return { bytes: String(left.bytes), files: String(left.files) };
}

function bodyOf(res: Response): Readable {
  return res.body ? Readable.fromWeb(res.body as import('node:stream/web').ReadableStream) : Readable.from([]);
}
