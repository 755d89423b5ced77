/**
 * Writes the OpenAPI document the server generates from its TypeBox schemas to openapi/openapi.json.
 * `--check` compares instead, and exits 1 if the committed file is stale (for CI).
 *
 *   npm run openapi          regenerate
 *   npm run openapi:check    verify
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { buildServer } from '../src/http/server.js';

export const OPENAPI_PATH = fileURLToPath(new URL('../openapi/openapi.json', import.meta.url));

/** The document as committed: 2-space JSON with a trailing newline. */
export async function generateOpenApi(): Promise<string> {
  // A throwaway workspace and fixed names, so nothing of this machine can reach the document.
  const workspace = mkdtempSync(join(tmpdir(), 'asm-openapi-'));
  const app = await createApp(loadConfig({ ASM_WORKSPACE_ROOT: workspace, ASM_NODE_NAME: 'openapi' }), pino({ level: 'silent' }));
  try {
    const server = await buildServer(app);
    try {
      await server.ready();
      return `${JSON.stringify(server.swagger(), null, 2)}\n`;
    } finally {
      await server.close();
    }
  } finally {
    await app.close();
    rmSync(workspace, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const generated = await generateOpenApi();
  const relative = 'openapi/openapi.json';
  if (process.argv.includes('--check')) {
    const committed = await readFile(OPENAPI_PATH, 'utf8').catch(() => null);
    if (committed !== generated) {
      process.stderr.write(`${relative} is stale: run npm run openapi\n`);
      return 1;
    }
    process.stdout.write(`${relative} is up to date\n`);
    return 0;
  }
  await mkdir(dirname(OPENAPI_PATH), { recursive: true });
  await writeFile(OPENAPI_PATH, generated);
  process.stdout.write(`wrote ${relative}\n`);
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`openapi: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
