import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { DestinationStream } from 'pino';
import { describe, expect, it } from 'vitest';
import { TurnBatchedLines } from '../../src/log-destination.js';
import { createLogger, runLogFields } from '../../src/logger.js';

/** The service logger's own rules: which fields are censored, that callers' objects stay as they were, and how a run is named. */
function capture() {
  const lines: string[] = [];
  const log = createLogger('info', { write: (line: string) => void lines.push(line) } as DestinationStream);
  return { log, lines, parsed: () => lines.map((line) => JSON.parse(line)) };
}

describe('the service logger', () => {
  it('censors credentials and MCP configurations at the top and one level down, and nothing else', () => {
    const { log, parsed } = capture();
    const headers = { authorization: 'Bearer k1', cookie: 'c=1', accept: 'application/json' };
    const session = { id: 'ses_1', mcp_servers: { a: { env: { T: 's1' } } }, mcp_server_config: { a: { env: { T: 's2' } } }, headers: { cookie: 'c=2' } };
    const fields = { authorization: 'Bearer k2', headers, session, body: { mcp_servers: { x: 1 } }, kept: { authorization: 'not a header', depth: { headers: { authorization: 'three levels down' } } } };
    log.info(fields, 'careless');
    const [line] = parsed();
    expect(line.authorization).toBe('[redacted]');
    expect(line.headers).toEqual({ authorization: '[redacted]', cookie: '[redacted]', accept: 'application/json' });
    expect(line.session).toEqual({ id: 'ses_1', mcp_servers: '[redacted]', mcp_server_config: '[redacted]', headers: { cookie: '[redacted]' } });
    expect(line.body).toEqual({ mcp_servers: '[redacted]' });
    // The same paths pino's redact had: `authorization` only at the top, nothing two levels down.
    expect(line.kept).toEqual(fields.kept);
    // The caller's objects are copied where censored, never changed.
    expect(headers.authorization).toBe('Bearer k1');
    expect(session.mcp_servers).toEqual({ a: { env: { T: 's1' } } });
    expect(fields.authorization).toBe('Bearer k2');
  });

  it('leaves a line without secrets as it is, and a class instance unsearched', () => {
    const { log, parsed } = capture();
    log.info({ sessionId: 'ses_1', headers: { accept: '*/*' }, when: new Date(0) }, 'plain');
    expect(parsed()[0]).toMatchObject({ sessionId: 'ses_1', headers: { accept: '*/*' }, when: '1970-01-01T00:00:00.000Z', msg: 'plain' });
  });

  it('names a run by its id, and by the request that created it where one did', () => {
    const { log, parsed } = capture();
    log.info({ ...runLogFields({ id: 'run_1', observability: { request_id: 'r1' } }), state: 'completed' }, 'from a request');
    log.info(runLogFields({ id: 'run_2', observability: {} }), 'from a retry');
    const [fromRequest, fromRetry] = parsed();
    expect(fromRequest).toMatchObject({ runId: 'run_1', reqId: 'r1', state: 'completed' });
    expect(fromRetry.runId).toBe('run_2');
    expect('reqId' in fromRetry).toBe(false);
  });

  it('replaces the value of every token= parameter, whichever field holds it', () => {
    const { log, lines } = capture();
    log.info({ url: '/v1/events?session_id=s&token=k3&after=1' }, 'GET /v1/runs/r/events?access_token=k4');
    expect(lines[0]).not.toMatch(/k3|k4/);
    expect(lines[0]).toContain('token=[redacted]&after=1');
  });
});

describe('the log on standard output', () => {
  it('hands the lines of a turn to the destination at once, filtered once, when the turn ends', async () => {
    const writes: string[] = [];
    let filtered = 0;
    const sink = { write: (text: string) => void writes.push(text), flushSync: () => undefined };
    const lines = new TurnBatchedLines(sink, (text) => (filtered++, text.toUpperCase()), () => sink);
    lines.write('a\n');
    lines.write('b\n');
    expect(writes).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    lines.write('c\n');
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes).toEqual(['A\nB\n', 'C\n']);
    expect(filtered).toBe(2);
  });

  it('writes every line held when the process exits in the same turn, in order, tokens redacted', async () => {
    const count = 20_000;
    const script = fileURLToPath(new URL('../fixtures/logger/lines-then-exit.ts', import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script, String(count)], { maxBuffer: 16 * 1024 * 1024 });
    const lines = stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line));
    expect(lines.map((line) => line.i)).toEqual(Array.from({ length: count }, (_, i) => i));
    expect(lines[count / 2].url).toBe('/v1/events?token=[redacted]');
    expect(stdout).not.toContain('held-secret');
  });
});
