#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { runCommand } from './run.js';
import { serveCommand } from './serve.js';
import { WORKER_USAGE, workerCommand } from './worker.js';

const USAGE = `asm — Agent Session Manager

Usage:
  asm serve                      start the service (configured by ASM_* environment variables)
${WORKER_USAGE}
  asm run --provider P [--cwd D] [--model M] [--permission-mode M] [--url URL] [--api-key K] PROMPT
                                 run one prompt through a running service, streaming its events;
                                 approvals are asked on the terminal, Ctrl-C interrupts the run
  asm help                       this text
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serveCommand();
    case 'worker':
      return workerCommand(rest);
    case 'run': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          provider: { type: 'string' },
          cwd: { type: 'string' },
          model: { type: 'string' },
          'permission-mode': { type: 'string' },
          url: { type: 'string', default: process.env.ASM_URL ?? `http://127.0.0.1:${process.env.ASM_PORT ?? 8787}` },
          'api-key': { type: 'string', default: process.env.ASM_API_KEY },
        },
      });
      if (!values.provider || positionals.length === 0) {
        process.stderr.write(`asm run: --provider and a PROMPT are required\n\n${USAGE}`);
        return 2;
      }
      return runCommand({
        url: values.url!,
        apiKey: values['api-key'],
        provider: values.provider,
        cwd: values.cwd,
        model: values.model,
        permissionMode: values['permission-mode'],
        prompt: positionals.join(' '),
      });
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`asm: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== -1) process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`asm: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
