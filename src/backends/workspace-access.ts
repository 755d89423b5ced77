import type { Readable } from 'node:stream';
import type { FileEntry, UploadResult } from '../schemas/workspace.js';
import { extractArchive, packFolder } from './workspace-archive.js';
import type { Budget, WorkspaceFiles } from './workspace-files.js';

/** A file opened for download. */
export interface FileDownload {
  stream: Readable;
  size: number;
}

/**
 * What the files API does to a session's workspace, wherever it is: here (LocalWorkspace, over
 * WorkspaceFiles), or on the worker that holds it (nodes/worker-files.ts, which asks that worker to
 * do the same through LocalWorkspace). `names` come from pathNames; `field` names the request field
 * an error is about.
 */
export interface WorkspaceAccess {
  list(names: string[], field: string, limit: number, after: string | undefined): Promise<{ entries: FileEntry[]; last: string | null }>;
  /** A folder as a tar stream. */
  pack(names: string[], field: string): Promise<Readable>;
  /** A file's bytes, or 'folder' when the path is one. */
  read(names: string[], field: string): Promise<FileDownload | 'folder'>;
  /** Writes one file from `body` within the budget; the bytes written. */
  write(names: string[], body: Readable, left: Budget, field: string): Promise<number>;
  /** Unpacks a tar or tar.gz from `body` into the folder `into`, within the budget. */
  extract(into: string[], body: Readable, left: Budget): Promise<UploadResult>;
}

export class LocalWorkspace implements WorkspaceAccess {
  constructor(private readonly files: WorkspaceFiles) {}

  list(names: string[], field: string, limit: number, after: string | undefined) {
    return this.files.list(names, field, limit, after);
  }

  async pack(names: string[], field: string): Promise<Readable> {
    return packFolder(await this.files.folder(names, field));
  }

  async read(names: string[], field: string): Promise<FileDownload | 'folder'> {
    const opened = await this.files.openForRead(names, field);
    return opened === 'folder' ? opened : { stream: opened.handle.createReadStream(), size: opened.size };
  }

  write(names: string[], body: Readable, left: Budget, field: string): Promise<number> {
    return this.files.writeFile(names, body, left, field);
  }

  extract(into: string[], body: Readable, left: Budget): Promise<UploadResult> {
    return extractArchive(this.files, into, body, left);
  }
}
