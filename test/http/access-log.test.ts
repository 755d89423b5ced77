/**
 * The access log (src/http/access-log.ts) on a real Fastify server: one `request completed` line per
 * answered request, none with ASM_ACCESS_LOG=off, and `request errored` either way (here: an
 * `onResponse` hook that fails, one of the two ways Fastify reports a request as errored).
 */
import Fastify from 'fastify';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AccessLog } from '../../src/http/access-log.js';
import { createLogger } from '../../src/logger.js';

async function linesOf(enabled: boolean): Promise<Array<{ msg: string; level: number }>> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const fastify = Fastify({ loggerInstance: createLogger('info', sink), logController: new AccessLog(enabled) });
  fastify.get('/ok', async () => ({ ok: true }));
  fastify.get('/hook-fails', { onResponse: (_request, _reply, done) => done(new Error('the hook failed')) }, async () => ({ ok: true }));
  expect((await fastify.inject('/ok')).statusCode).toBe(200);
  expect((await fastify.inject('/hook-fails')).statusCode).toBe(200);
  await fastify.close();
  return lines.map((line) => JSON.parse(line)).filter((line) => line.msg === 'request completed' || line.msg === 'request errored');
}

describe('AccessLog', () => {
  it('writes one line per answered request, at error for one that errored', async () => {
    expect((await linesOf(true)).map((l) => [l.msg, l.level])).toEqual([
      ['request completed', 30],
      ['request errored', 50],
    ]);
  });

  it('off, writes no line for an answered request, and still one for a request that errored', async () => {
    expect((await linesOf(false)).map((l) => [l.msg, l.level])).toEqual([['request errored', 50]]);
  });
});
