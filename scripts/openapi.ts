/**
 * Writes the OpenAPI document the server generates from its TypeBox schemas to openapi/openapi.json,
 * and the WebSocket protocol's AsyncAPI document (src/schemas/ws.ts) to openapi/asyncapi.json.
 * `--check` compares instead, and exits 1 if a committed file is stale (for CI).
 *
 *   npm run openapi          regenerate
 *   npm run openapi:check    verify
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { buildServer } from '../src/http/server.js';
import { asyncApiDocument } from '../src/schemas/ws.js';
import { VERSION } from '../src/version.js';

export const OPENAPI_PATH = fileURLToPath(new URL('../openapi/openapi.json', import.meta.url));
export const ASYNCAPI_PATH = fileURLToPath(new URL('../openapi/asyncapi.json', import.meta.url));

/** The AsyncAPI document as committed, in the same form as openapi.json. */
export function generateAsyncApi(): string {
  return `${JSON.stringify(asyncApiDocument(VERSION), null, 2)}\n`;
}

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
  const documents: Array<[string, string]> = [
    [OPENAPI_PATH, await generateOpenApi()],
    [ASYNCAPI_PATH, generateAsyncApi()],
  ];
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const [path, generated] of documents) {
    const relative = `openapi/${basename(path)}`;
    if (check) {
      const committed = await readFile(path, 'utf8').catch(() => null);
      if (committed === generated) process.stdout.write(`${relative} is up to date\n`);
      else {
        process.stderr.write(`${relative} is stale: run npm run openapi\n`);
        stale++;
      }
      continue;
    }
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, generated);
    process.stdout.write(`wrote ${relative}\n`);
  }
  return stale > 0 ? 1 : 0;
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
