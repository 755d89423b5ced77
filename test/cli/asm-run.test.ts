import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/ports.js';
import { startServer, type TestServer } from '../helpers/server.js';

/** `asm` as a user runs it: a real subprocess against a real server, answering approvals on stdin. */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `asm ARGS` with `stdin`; with `recordModulesTo`, every module it loads is listed in that file (test/fixtures/modules). */
function asm(args: string[], stdin = '', recordModulesTo?: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.ASM_URL;
    delete env.ASM_API_KEY;
    const recording = recordModulesTo ? ['--import', './test/fixtures/modules/record.mjs'] : [];
    if (recordModulesTo) env.RECORD_MODULES_TO = recordModulesTo;
    const child = spawn(process.execPath, ['--import', 'tsx', ...recording, 'src/cli/main.ts', ...args], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(stdin);
  });
}

/** The ids the CLI announces on stderr: "session ses_… · run run_… · …". */
function idsOf(stderr: string): { sessionId: string; runId: string } {
  const match = /^session (ses_\S+) · run (run_\S+) · /m.exec(stderr);
  expect(match, stderr).not.toBeNull();
  return { sessionId: match![1], runId: match![2] };
}

let server: TestServer;

describe('asm run', () => {
  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('runs a shell command: output on stdout, the completion on stderr, exit 0, session closed', async () => {
    const result = await asm(['run', '--provider', 'shell', '--url', server.url, 'echo hello']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe('hello\n');
    expect(result.stderr).toMatch(/^— completed/m);
    const { sessionId, runId } = idsOf(result.stderr);
    expect((await server.request('GET', `/v1/runs/${runId}`)).body).toMatchObject({ state: 'completed', result: { text: 'hello\n' } });
    expect((await server.request('GET', `/v1/sessions/${sessionId}`)).body.state).toBe('closed');
  });

  it('exits 1 when the command fails, saying why on stderr', async () => {
    const result = await asm(['run', '--provider', 'shell', '--url', server.url, 'echo broken >&2; exit 3']);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('broken\n');
    expect(result.stderr).toMatch(/^— failed: provider_error: .*3/m);
    const { runId } = idsOf(result.stderr);
    expect((await server.request('GET', `/v1/runs/${runId}`)).body.state).toBe('failed');
  });

  it('exits 1 with the server\'s refusal when the session cannot be created', async () => {
    const result = await asm(['run', '--provider', 'nope', '--url', server.url, 'hi']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('400 bad_request: provider: unknown provider "nope"');
  });

  it('asks the approval on the terminal and allows it on "y"', async () => {
    const result = await asm(['run', '--provider', 'claude', '--url', server.url, '[fixture:c2-approve] Say hello, then create a file'], 'y\n');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('allow Bash {"command":"touch created-by-claude.txt"');
    expect(result.stderr).toContain('✓ allowed');
    expect(result.stderr).toMatch(/^— completed \(end_turn\)/m);
    expect(result.stdout).toContain('Hi! I created `created-by-claude.txt`.');

    const { runId } = idsOf(result.stderr);
    const events = (await server.request('GET', `/v1/runs/${runId}/events`)).body.events;
    const resolved = events.filter((e: any) => e.kind === 'approval_resolved');
    expect(resolved.map((e: any) => e.payload.decision)).toEqual(['allow']);
    expect(events.at(-1).kind).toBe('result');
    expect((await server.request('GET', `/v1/runs/${runId}`)).body.state).toBe('completed');
  });

  it('denies on "n", and the run still completes', async () => {
    const result = await asm(['run', '--provider', 'claude', '--url', server.url, '[fixture:c2-deny] Say hello, then create a file'], 'n\n');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('✗ denied (denied on the terminal)');
    expect(result.stdout).toContain('I could not create the file because the command needs approval.');

    const { runId } = idsOf(result.stderr);
    const events = (await server.request('GET', `/v1/runs/${runId}/events`)).body.events;
    expect(events.filter((e: any) => e.kind === 'approval_resolved').map((e: any) => e.payload)).toEqual([
      expect.objectContaining({ decision: 'deny', reason: 'denied on the terminal' }),
    ]);
    expect((await server.request('GET', `/v1/runs/${runId}`)).body.state).toBe('completed');
  });

  it('denies when stdin ends without an answer', async () => {
    const result = await asm(['run', '--provider', 'claude', '--url', server.url, '[fixture:c2-deny] Say hello, then create a file'], '');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('(end of input)');
    expect(result.stderr).toContain('✗ denied');
  });

  it('asm help and asm run load none of the service: only the command that runs is loaded', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'asm-cli-modules-'));
    try {
      const loaded = async (args: string[]): Promise<string[]> => {
        const file = join(dir, `${args[0]}.txt`);
        const result = await asm(args, '', file);
        expect(result.code, result.stderr).toBe(0);
        return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((url) => fileURLToPath(url).slice(ROOT.length));
      };
      // The files of src/ it loaded, and the packages.
      const sources = (paths: string[]) => paths.filter((path) => path.startsWith('src/')).sort();
      const packages = (paths: string[]) => [...new Set(paths.flatMap((path) => /^node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path)?.[1] ?? []))];
      const help = await loaded(['help']);
      expect(sources(help)).toEqual(['src/cli/main.ts', 'src/cli/usage.ts']);
      expect(packages(help)).toEqual([]);
      const run = await loaded(['run', '--provider', 'shell', '--url', server.url, 'echo hi']);
      expect(sources(run)).toEqual(['src/cli/main.ts', 'src/cli/run.ts', 'src/cli/usage.ts']);
      expect(packages(run)).toEqual(['ws']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('asm usage', () => {
  it('says which URL it could not reach and how to start the service or set --url/ASM_URL', async () => {
    // A port nothing listens on.
    const url = `http://127.0.0.1:${await freePort()}`;
    const result = await asm(['run', '--provider', 'shell', '--url', url, 'echo x']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot reach the ASM service at ${url} (ECONNREFUSED)`);
    expect(result.stderr).toContain('asm serve');
    expect(result.stderr).toContain('--url or ASM_URL');
    expect(result.stderr).not.toContain('fetch failed');
    const bad = await asm(['run', '--provider', 'shell', '--url', 'localhost:8787', 'echo x']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--url: "localhost:8787" is not an http(s) URL');
  });

  it('asm help prints the usage and exits 0', async () => {
    const result = await asm(['help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Usage:');
    expect(result.stdout).toContain('asm run --provider P');
  });

  it('asm run without --provider exits 2 with the usage on stderr', async () => {
    const result = await asm(['run', 'echo hello']);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('--provider and a PROMPT are required');
    expect(result.stderr).toContain('Usage:');
  });
});
