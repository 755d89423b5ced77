#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { USAGE } from './usage.js';

/*
 * Each command's module is loaded when that command runs. Loaded at the top, the whole service came
 * with `asm help` and with `asm run` (a client of a running service), which never start it: `asm help`
 * took 0.7 s and 90 MB (bench/RESULTS.md, issue 14, thirtieth pass).
 */

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return (await import('./serve.js')).serveCommand();
    case 'worker':
      return (await import('./worker.js')).workerCommand(rest);
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
      return (await import('./run.js')).runCommand({
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
