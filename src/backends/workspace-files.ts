import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, symlink, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AsmError, badField } from '../errors/kinds.js';
import type { FileEntry } from '../schemas/workspace.js';
import { isInside } from './workspace.js';

/**
 * A session's workspace as the files API touches it, confined to its root:
 *
 * - a path is names below the root: absolute paths, `..`, NUL and empty names are refused;
 * - no symlink is followed: every folder on a path must be a real folder (lstat), the file itself is
 *   opened with O_NOFOLLOW, and the opened descriptor's real path is checked to be under the root
 *   before anything is read or truncated, so a folder swapped for a symlink meanwhile is caught too;
 * - special files (FIFOs, devices, sockets) are neither read nor written (O_NONBLOCK, then fstat).
 *
 * What an upload may write is counted against a Budget while it streams: past it, payload_too_large.
 */

/** What one upload may still write. */
export interface Budget {
  bytes: number;
  files: number;
  /** The limits as configured, for the error message. */
  readonly limits: { bytes: number; files: number };
}

export function budget(bytes: number, files: number): Budget {
  return { bytes, files, limits: { bytes, files } };
}

/** The names of a relative path; refuses what could name something outside the root. */
export function pathNames(path: string, field: string): string[] {
  if (path.includes('\0')) throw badField(field, 'contains a NUL byte');
  if (path.startsWith('/')) throw outside(field, `${path} is absolute; paths are relative to the workspace`);
  const names = path.split('/').filter((name) => name !== '' && name !== '.');
  if (names.includes('..')) throw outside(field, `${path} contains ".."`);
  if (names.some((name) => Buffer.byteLength(name) > 255)) throw badField(field, 'a name is longer than 255 bytes');
  return names;
}

export class WorkspaceFiles {
  private constructor(readonly root: string) {}

  static async at(root: string): Promise<WorkspaceFiles> {
    return new WorkspaceFiles(await realpath(root));
  }

  /** The real folder `names` lead to; with `create`, missing folders are made. */
  async folder(names: string[], field: string, create = false): Promise<string> {
    let current = this.root;
    for (const name of names) {
      const next = join(current, name);
      let stats = await lstatOrNull(next);
      if (!stats && create) {
        await mkdir(next, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
        });
        stats = await lstatOrNull(next);
      }
      if (!stats) throw new AsmError('not_found', `${field}: ${names.join('/')} does not exist in the workspace`, { details: { field } });
      if (stats.isSymbolicLink()) throw outside(field, `${names.join('/')} passes through a symlink, which the files API never follows`);
      if (!stats.isDirectory()) throw new AsmError('conflict', `${field}: ${relativeOf(this.root, next)} is not a folder`, { details: { field } });
      current = next;
    }
    return current;
  }

  /** Writes one file from `source`, replacing its content, within the budget; returns the bytes written. */
  async writeFile(names: string[], source: Readable, left: Budget, field: string, mode = 0o644): Promise<number> {
    if (names.length === 0) throw badField(field, 'names the workspace itself, not a file');
    const parent = await this.folder(names.slice(0, -1), field, true);
    const handle = await this.openInside(join(parent, names.at(-1)!), constants.O_WRONLY | constants.O_CREAT, field, mode);
    let written = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        left.bytes -= chunk.length;
        written += chunk.length;
        done(left.bytes < 0 ? tooLarge(left) : null, chunk);
      },
    });
    try {
      await handle.truncate(0);
    } catch (err) {
      await handle.close();
      throw err;
    }
    // The write stream closes the handle when it ends or fails.
    await pipeline(source, counter, handle.createWriteStream());
    return written;
  }

  /** A symlink whose target stays inside the root (taken from the link's folder); anything else is refused. */
  async writeSymlink(names: string[], target: string, field: string): Promise<void> {
    if (names.length === 0) throw badField(field, 'names the workspace itself');
    const parent = await this.folder(names.slice(0, -1), field, true);
    const path = join(parent, names.at(-1)!);
    if (target.startsWith('/') || !isInside(this.root, resolve(dirname(path), target))) {
      throw outside(field, `the symlink ${names.join('/')} points out of the workspace (${target})`);
    }
    const existing = await lstatOrNull(path);
    if (existing?.isDirectory()) throw new AsmError('conflict', `${field}: ${names.join('/')} is a folder`, { details: { field } });
    if (existing) await unlink(path);
    await symlink(target, path);
  }

  /** A file opened for reading, with its size; a folder answers 'folder'. */
  async openForRead(names: string[], field: string): Promise<{ handle: FileHandle; size: number } | 'folder'> {
    if (names.length === 0) return 'folder';
    const parent = await this.folder(names.slice(0, -1), field);
    const path = join(parent, names.at(-1)!);
    const stats = await lstatOrNull(path);
    if (!stats) throw new AsmError('not_found', `${field}: ${names.join('/')} does not exist in the workspace`, { details: { field } });
    if (stats.isDirectory()) return 'folder';
    const handle = await this.openInside(path, constants.O_RDONLY, field);
    return { handle, size: (await handle.stat()).size };
  }

  /** A folder's entries by name, a page at a time after the name `after`. */
  async list(names: string[], field: string, limit: number, after: string | undefined): Promise<{ entries: FileEntry[]; last: string | null }> {
    const folder = await this.folder(names, field);
    const all = (await readdir(folder)).sort();
    const start = after === undefined ? 0 : all.findIndex((name) => name > after);
    const page = start < 0 ? [] : all.slice(start, start + limit);
    const entries: FileEntry[] = [];
    for (const name of page) {
      const stats = await lstatOrNull(join(folder, name));
      if (stats) entries.push({ name, type: typeOf(stats), size: stats.isFile() ? stats.size : 0, modified_at: stats.mtime.toISOString() });
    }
    const more = start >= 0 && start + limit < all.length;
    return { entries, last: more ? page.at(-1)! : null };
  }

  /** Opens a file that is not a symlink, checks where it really is, and that it is a regular file. */
  private async openInside(path: string, flags: number, field: string, mode?: number): Promise<FileHandle> {
    let handle: FileHandle;
    try {
      handle = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, mode);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw outside(field, `${relativeOf(this.root, path)} is a symlink, which the files API never follows`);
      if (code === 'ENXIO' || code === 'EISDIR') throw new AsmError('conflict', `${field}: ${relativeOf(this.root, path)} is not a regular file`, { details: { field } });
      throw err;
    }
    try {
      const real = await realpath(`/proc/self/fd/${handle.fd}`);
      if (!isInside(this.root, real)) throw outside(field, `${relativeOf(this.root, path)} resolves out of the workspace`);
      if (!(await handle.stat()).isFile()) throw new AsmError('conflict', `${field}: ${relativeOf(this.root, path)} is not a regular file`, { details: { field } });
      return handle;
    } catch (err) {
      await handle.close();
      throw err;
    }
  }
}

export function tooLarge(left: Budget): AsmError {
  return new AsmError('payload_too_large', `the upload exceeds ${left.limits.bytes} bytes or ${left.limits.files} files (ASM_MAX_UPLOAD_BYTES, ASM_MAX_UPLOAD_FILES, or the tenant's upload_bytes, upload_files)`, {
    details: { limit_bytes: left.limits.bytes, limit_files: left.limits.files },
  });
}

export function outside(field: string, message: string): AsmError {
  return new AsmError('forbidden', `${field}: ${message}`, { details: { field } });
}

function typeOf(stats: Stats): FileEntry['type'] {
  if (stats.isFile()) return 'file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symlink';
  return 'other';
}

function relativeOf(root: string, path: string): string {
  return path.slice(root.length + 1) || '.';
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
