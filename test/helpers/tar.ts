import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { Header, Parser, type HeaderData, type ReadEntry } from 'tar';

/**
 * Tar archives written entry by entry, as any tar could: hostile ones too (`../x`, absolute names,
 * links out of the root, devices), which no well-behaved archiver produces from a folder.
 */
export interface TarEntry extends HeaderData {
  path: string;
  body?: string;
}

export function tarOf(entries: TarEntry[], options: { gzip?: boolean } = {}): Buffer {
  const blocks: Buffer[] = [];
  for (const { body, ...data } of entries) {
    const content = Buffer.from(body ?? '');
    const header = Buffer.alloc(512);
    new Header({ mode: 0o644, mtime: new Date(0), type: 'File', ...data, size: data.type === undefined || data.type === 'File' ? content.length : 0 }).encode(header);
    blocks.push(header);
    if (data.type === undefined || data.type === 'File') blocks.push(content, Buffer.alloc((512 - (content.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  const tar = Buffer.concat(blocks);
  return options.gzip ? gzipSync(tar) : tar;
}

/** The entries of a tar archive: path → content (files), or the entry type for the others. */
export async function entriesOf(archive: Buffer): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const parser = new Parser();
  parser.on('entry', (entry: ReadEntry) => {
    const chunks: Buffer[] = [];
    entry.on('data', (chunk: Buffer) => chunks.push(chunk));
    entry.on('end', () => found.set(entry.path.replace(/^\.\//, '').replace(/\/$/, ''), entry.type === 'File' ? Buffer.concat(chunks).toString() : entry.type));
  });
  await new Promise<void>((resolve, reject) => {
    parser.on('end', () => resolve());
    parser.on('error', reject);
    parser.end(archive);
  });
  return found;
}

/** An HTTP request whose path is sent exactly as written (fetch would resolve `..` and `//` in it first). */
export function rawRequest(url: string, method: string, path: string, body?: Buffer | string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode!, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
