import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PERMISSION_MODE_NAMES, normalizePermissionMode, type PermissionMode } from '../../src/providers/permission-modes.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { scratchDir } from '../helpers/sandbox.js';
import { reply, startServer, type TestServer } from '../helpers/server.js';

/**
 * Every provider × every normalized permission mode and alias, through the service: the session is
 * refused with the precise 400, or a run starts the (fake) CLI, which records the argv it received
 * (and codex app-server the thread/start it was sent); both are held to the mode's native form.
 */

const bin = (name: string) => fileURLToPath(new URL(`../fixtures/bin/fake-${name}.mjs`, import.meta.url));

/** What each normalized mode must reach the CLI as; absent: refused. */
type Expectation = (argv: string[], codexThread: Record<string, unknown> | undefined) => void;
const flag = (name: string, value?: string) => (argv: string[]) => {
  if (value === undefined) expect(argv).not.toContain(name);
  else expect(argv.slice(argv.indexOf(name), argv.indexOf(name) + 2)).toEqual([name, value]);
};
const appServer = (approvalPolicy: string, sandbox: string): Expectation => (argv, thread) => {
  expect(argv).toEqual(['app-server']);
  expect(thread).toMatchObject({ approvalPolicy, sandbox });
};
const exec = (...modeArgs: string[]): Expectation => (argv) => {
  expect(argv.slice(0, 3)).toEqual(['exec', '--json', '--skip-git-repo-check']);
  expect(argv.slice(3, 3 + modeArgs.length)).toEqual(modeArgs);
};

const TABLE: Record<string, { prompt: string; modes: Partial<Record<PermissionMode, Expectation>> }> = {
  claude: {
    prompt: 'hi',
    modes: {
      default: flag('--permission-mode'),
      auto: flag('--permission-mode', 'acceptEdits'),
      bypass: flag('--permission-mode', 'bypassPermissions'),
      plan: flag('--permission-mode', 'plan'),
    },
  },
  codex: {
    prompt: 'Say hello',
    modes: {
      default: appServer('on-request', 'read-only'),
      auto: appServer('on-request', 'workspace-write'),
      bypass: exec('--dangerously-bypass-approvals-and-sandbox'),
      plan: exec('-s', 'read-only', '-c', 'approval_policy="never"'),
    },
  },
  gemini: {
    prompt: 'say hello [fixture:g-text]',
    modes: {
      default: flag('--approval-mode'),
      auto: flag('--approval-mode', 'auto_edit'),
      bypass: flag('--approval-mode', 'yolo'),
      plan: flag('--approval-mode', 'plan'),
    },
  },
  amp: {
    prompt: 'hi',
    modes: {
      default: (argv) => expect(argv).not.toContain('--dangerously-allow-all'),
      bypass: (argv) => expect(argv).toContain('--dangerously-allow-all'),
    },
  },
  shell: { prompt: 'echo hi', modes: { default: (argv) => expect(argv).toEqual(['-c', 'echo hi']) } },
};

/** Each accepted spelling, in a case other than its own, so the test proves case-insensitivity too. */
const SPELLINGS = PERMISSION_MODE_NAMES.flatMap((name) => [name, name.toUpperCase()]);

let server: TestServer;
let argvLog: string;
let codexLog: string;

beforeAll(async () => {
  const scratch = scratchDir('asm-modes-');
  argvLog = join(scratch, 'argv.jsonl');
  codexLog = join(scratch, 'codex-stdin.jsonl');
  Object.assign(process.env, { GEMINI_API_KEY: 'test-gemini-key', AMP_API_KEY: 'test-amp-key', FAKE_ARGV_LOG: argvLog, FAKE_CODEX_LOG: codexLog });
  server = await startServer({
    ASM_CODEX_BIN: bin('codex'),
    ASM_GEMINI_BIN: bin('gemini'),
    ASM_AMP_BIN: bin('amp'),
    ASM_PASS_ENV: 'FAKE_ARGV_LOG,FAKE_CODEX_LOG',
  });
});
afterAll(async () => {
  await server.close();
  for (const name of ['GEMINI_API_KEY', 'AMP_API_KEY', 'FAKE_ARGV_LOG', 'FAKE_CODEX_LOG']) delete process.env[name];
});

/** The argv the provider's CLI recorded last (providers run in parallel, each one case at a time). */
function lastArgv(cli: string): string[] {
  return readJsonLines<{ cli: string; argv: string[] }>(argvLog).filter((line) => line.cli === cli).at(-1)!.argv;
}

/** The lines codex read from its stdin so far (the fake appends them; only codex cases write there, one at a time). */
function codexStdin(): Array<Record<string, any>> {
  return readJsonLines(codexLog);
}

describe('permission_mode: every provider × every normalized mode and alias', () => {
  it.concurrent.each(Object.keys(TABLE))('%s', async (provider) => {
    const { prompt, modes } = TABLE[provider];
    // The shell is the real /bin/sh: its argv is the one run_started reports.
    const shellArgv = async (runId: string) => (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: runId } } }))).body.events[1].payload.args;
    for (const spelling of SPELLINGS) {
      const mode = normalizePermissionMode(spelling)!;
      const created = await reply(server.client.POST('/v1/sessions', { body: { provider, permission_mode: spelling } }));
      const expectation = modes[mode];
      if (!expectation) {
        expect(created.status, `${provider} ${spelling}`).toBe(400);
        expect(created.body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'permission_mode', provider, mode } });
        expect(created.body.error.message).toContain(`${provider} has no permission mode ${mode}`);
        continue;
      }
      expect(created.status, `${provider} ${spelling}`).toBe(201);
      expect(created.body).toMatchObject({ permission_mode: mode });
      const codexLinesBefore = codexStdin().length;
      const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: created.body.id } }, body: { prompt, wait: true } }));
      expect(run.body.state, `${provider} ${spelling}: ${JSON.stringify(run.body.result?.error)}`).toBe('completed');
      const argv = provider === 'shell' ? await shellArgv(run.body.id) : lastArgv(provider);
      expectation(argv, codexStdin().slice(codexLinesBefore).find((line) => line.method === 'thread/start')?.params);
    }
    // A run of the fake CLI per spelling (about 20), four providers at once: 18 s at load 5 here.
  }, 60_000);
});
