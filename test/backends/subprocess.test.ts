import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { buildCliEnv } from '../../src/providers/env.js';
import { LineFramer, spawnSubprocess, type SubprocessOptions } from '../../src/backends/subprocess.js';

function frame(chunks: Buffer[], maxBytes = 8): { lines: string[]; overlong: string[] } {
  const lines: string[] = [];
  const overlong: string[] = [];
  const framer = new LineFramer(maxBytes, (line) => lines.push(line), (head) => overlong.push(head));
  for (const chunk of chunks) framer.push(chunk);
  framer.end();
  return { lines, overlong };
}

describe('LineFramer', () => {
  it('splits on newlines across chunks and keeps a last line without one', () => {
    expect(frame([Buffer.from('ab\ncd'), Buffer.from('e\n\nf')]).lines).toEqual(['ab', 'cde', '', 'f']);
  });

  it('decodes a multi-byte character split between chunks', () => {
    const euro = Buffer.from('€\n'); // 3 bytes, then the newline
    expect(frame([euro.subarray(0, 1), euro.subarray(1)]).lines).toEqual(['€']);
  });

  it('reports an overlong line once, cut at the limit, and goes on with the next line', () => {
    expect(frame([Buffer.from('0123456789abc\nok\n')])).toEqual({ lines: ['ok'], overlong: ['01234567'] });
  });

  it('accepts a line of exactly the limit', () => {
    expect(frame([Buffer.from('01234567\n')])).toEqual({ lines: ['01234567'], overlong: [] });
  });
});

describe('spawnSubprocess', () => {
  const options = (script: string): SubprocessOptions => ({
    command: '/bin/sh',
    args: ['-c', script],
    cwd: tmpdir(),
    env: buildCliEnv(process.env, [], []),
    stdin: 'control',
    limits: { lineBytes: 1024, stderrBytes: 1024, killGraceMs: 200 },
    onLine: () => {},
    onStderr: () => {},
    onOverflow: () => {},
  });

  it('survives writes after the CLI closed its stdin or exited (EPIPE)', async () => {
    const child = await spawnSubprocess(options('exec 0<&-; sleep 0.1'));
    for (let i = 0; i < 100; i++) child.write('{"type":"keep_alive"}');
    const exit = await child.closed;
    child.write('after exit');
    child.endInput();
    expect(exit).toEqual({ code: 0, signal: null, stderr: '' });
  });

  it('reports the exit code, the signal and the stderr tail', async () => {
    expect(await (await spawnSubprocess(options('echo bad >&2; exit 4'))).closed).toEqual({ code: 4, signal: null, stderr: 'bad\n' });
    const stopped = await spawnSubprocess(options('sleep 30'));
    stopped.stop();
    expect((await stopped.closed).signal).toBe('SIGTERM');
  });
});
