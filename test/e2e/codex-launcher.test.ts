import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../helpers/sandbox.js';
import { reply, startServer, type TestServer } from '../helpers/server.js';

/**
 * ASM_CODEX_BIN naming codex's npm launcher (`@openai/codex/bin/codex.js`), laid out as npm installs
 * it: a run, in the sandbox, starts the platform's native binary beside it with the launcher's
 * variables (src/providers/codex/native.ts), not the launcher. Here the launcher only leaves a mark
 * and fails, and the "native binary" writes down its variables and becomes the fake codex
 * (test/fixtures/bin/fake-codex.mjs), so the run completes only if the launcher was skipped.
 */

const FAKE_CODEX = fileURLToPath(new URL('../fixtures/bin/fake-codex.mjs', import.meta.url));

function executable(path: string, content: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  chmodSync(path, 0o755);
  return path;
}

describe.runIf(`${process.platform} ${process.arch}` === 'linux x64')("codex's npm launcher through the service", () => {
  const dir = scratchDir('asm-codex-npm-');
  const root = join(dir, 'node_modules', '@openai', 'codex');
  const platformPackage = join(dir, 'node_modules', '@openai', 'codex-linux-x64');
  const marks = { launcher: join(dir, 'launcher-ran'), env: join(dir, 'native-env') };
  let server: TestServer;

  beforeAll(async () => {
    const launcher = executable(join(root, 'bin', 'codex.js'), `#!/bin/sh\ntouch '${marks.launcher}'\nexit 9\n`);
    executable(
      join(platformPackage, 'vendor', 'x86_64-unknown-linux-musl', 'bin', 'codex'),
      `#!/bin/sh\nprintf '%s\\n' "CODEX_MANAGED_BY_NPM=$CODEX_MANAGED_BY_NPM" "CODEX_MANAGED_PACKAGE_ROOT=$CODEX_MANAGED_PACKAGE_ROOT" > '${marks.env}'\nexec '${process.execPath}' '${FAKE_CODEX}' "$@"\n`,
    );
    writeFileSync(join(platformPackage, 'package.json'), JSON.stringify({ name: '@openai/codex-linux-x64' }));
    server = await startServer({ ASM_CODEX_BIN: launcher });
  });
  afterAll(() => server?.close());

  it('starts the native binary with the launcher\'s variables, and the run completes', async () => {
    const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'codex' } }));
    expect(session.status).toBe(201);
    const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'Say hello', wait: true } }));
    expect(run.body).toMatchObject({ state: 'completed' });
    expect(existsSync(marks.launcher)).toBe(false);
    expect(readFileSync(marks.env, 'utf8').trim().split('\n')).toEqual(['CODEX_MANAGED_BY_NPM=1', `CODEX_MANAGED_PACKAGE_ROOT=${root}`]);
  });
});
