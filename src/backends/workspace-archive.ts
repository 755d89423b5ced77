import type { Readable } from 'node:stream';
import { create, Parser, type ReadEntry } from 'tar';
import { AsmError } from '../errors/kinds.js';
import type { UploadResult } from '../schemas/workspace.js';
import { outside, pathNames, tooLarge, type Budget, type WorkspaceFiles } from './workspace-files.js';

/**
 * Tar archives in and out of a session's workspace. An upload (tar, or tar.gz: the parser tells them
 * apart) is read as it streams, each entry written by WorkspaceFiles, so an entry can land only inside
 * the root: absolute names and `..` are refused, as are hard links, devices and FIFOs, and symlinks
 * pointing out of the root. The first refused entry ends the upload (entries before it stay written).
 */

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);

export async function extractArchive(files: WorkspaceFiles, into: string[], source: Readable, left: Budget): Promise<UploadResult> {
  const field = 'archive';
  const result: UploadResult = { files: 0, directories: 0, bytes: 0 };
  const parser = new Parser({ strict: true });
  let failure: unknown;
  let chain = Promise.resolve();
  let stop: (err: unknown) => void = () => undefined;
  let current: ReadEntry | undefined;
  parser.on('entry', (entry: ReadEntry) => {
    chain = chain.then(async () => {
      if (failure !== undefined) return void entry.resume();
      current = entry;
      try {
        await writeEntry(files, into, entry, left, result);
      } catch (err) {
        failure = err;
        entry.resume();
        stop(err);
      }
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      stop = reject;
      parser.on('end', () => resolve());
      parser.on('error', reject);
      source.on('error', reject);
      source.on('data', (chunk: Buffer) => {
        if (failure !== undefined || parser.write(chunk)) return;
        source.pause();
        parser.once('drain', () => source.resume());
      });
      source.on('end', () => parser.end());
    });
  } catch (err) {
    // The body broke off (or was refused) midway: the entry being written ends too, with its write.
    if (failure === undefined) current?.destroy(err as Error);
    failure ??= err instanceof AsmError ? err : new AsmError('bad_request', `archive: not a readable tar or tar.gz (${(err as Error).message})`, { details: { field } });
  }
  source.removeAllListeners('data');
  await chain;
  if (failure !== undefined) throw failure;
  return result;
}

async function writeEntry(files: WorkspaceFiles, into: string[], entry: ReadEntry, left: Budget, result: UploadResult): Promise<void> {
  const field = `archive: ${entry.path}`;
  if (entry.path.startsWith('/')) throw outside('archive', `entry ${entry.path} has an absolute path`);
  const names = [...into, ...pathNames(entry.path, 'archive')];
  if (--left.files < 0) throw tooLarge(left);
  if (entry.type === 'Directory') {
    entry.resume();
    await files.folder(names, field, true);
    result.directories++;
  } else if (FILE_TYPES.has(entry.type)) {
    result.bytes += await files.writeFile(names, entry as unknown as Readable, left, field, (entry.mode ?? 0o644) & 0o755);
    result.files++;
  } else if (entry.type === 'SymbolicLink') {
    entry.resume();
    await files.writeSymlink(names, entry.linkpath ?? '', field);
    result.files++;
  } else {
    throw outside('archive', `entry ${entry.path} is a ${entry.type}; only files, folders and symlinks inside the workspace are unpacked`);
  }
}

/** A folder of the workspace as a tar stream, its paths relative to the folder; symlinks are stored as links, never followed. */
export function packFolder(folder: string): Readable {
  return create({ cwd: folder, portable: true, follow: false }, ['.']) as unknown as Readable;
}
