/**
 * Logger benchmark (issue 14, request path): µs per log line of the service's logger
 * (src/logger.ts: redactSecrets, the token filter) against pino with the wildcard
 * `redact` paths the service used before (the same fields censored) and bare pino, alternated over
 * rounds, each writing to a sink that drops the line. A line as a create writes it, naming its
 * request. Prints one JSON line.
 *
 * Usage: npm run bench -- logger [--quick]
 */
import pino, { type DestinationStream, type Logger } from 'pino';
import { createLogger } from '../src/logger.js';
import { machine, median, round } from './asm-server.js';

const sink = { write: () => undefined } as unknown as DestinationStream;
const WILDCARD_PATHS = [
  'authorization', 'headers.authorization', '*.headers.authorization', 'headers.cookie', '*.headers.cookie',
  'mcp_servers', '*.mcp_servers', 'mcp_server_config', '*.mcp_server_config',
];

const loggers: Record<string, Logger> = {
  service: createLogger('info', sink),
  pino_wildcard_redact: pino({ level: 'info', redact: { paths: WILDCARD_PATHS, censor: '[redacted]' } }, sink),
  pino_bare: pino({ level: 'info' }, sink),
};

function microsPerLine(log: Logger, lines: number): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < lines; i++) log.info({ sessionId: 'ses_0123456789', reqId: 'bench-request', provider: 'shell', tenant: 'bench' }, 'session created');
  return Number(process.hrtime.bigint() - started) / lines / 1000;
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const rounds = quick ? 3 : 7;
  const lines = quick ? 50_000 : 200_000;
  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(loggers).map((name) => [name, []]));
  for (const log of Object.values(loggers)) microsPerLine(log, lines / 10); // JIT warm-up, unrecorded
  for (let r = 0; r < rounds; r++) for (const [name, log] of Object.entries(loggers)) samples[name]!.push(microsPerLine(log, lines));
  const us = Object.fromEntries(Object.entries(samples).map(([name, values]) => [name, round(median(values), 2)]));
  process.stdout.write(`${JSON.stringify({ bench: 'logger', date: new Date().toISOString(), machine: machine(), quick, rounds, lines_per_round: lines, us_per_line: us })}\n`);
}
