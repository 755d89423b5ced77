/**
 * Reads the JSON-lines logs the fake CLIs append to (test/fixtures/bin/replay.mjs), while other
 * fakes may still be writing to them.
 */
import { existsSync, readFileSync } from 'node:fs';

/**
 * The whole lines of `path`, parsed; [] if it does not exist yet. A line still being appended by a
 * running process (no newline yet) is left out: a reader can see an append half done, and that line
 * belongs to a run the caller is not reading about.
 */
export function readJsonLines<T = any>(path: string): T[] {
  if (!existsSync(path)) return [];
  const lines = readFileSync(path, 'utf8').split('\n');
  lines.pop();
  return lines.filter(Boolean).map((line) => JSON.parse(line) as T);
}
