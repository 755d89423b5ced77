import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DestinationStream } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { scratchDir } from '../helpers/sandbox.js';
import { reply, SERVER_MODES, startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

/**
 * MCP servers per session (README "MCP servers") through the service: each provider's CLI is the
 * probe (test/fixtures/bin/mcp-probe.mjs), run in the session's sandbox, which reports the native
 * configuration it received. The secrets (a stdio server's env, an HTTP server's headers) must reach
 * the CLI and nothing else: not its argv (read from every process's /proc/<pid>/cmdline on the host
 * while it runs), not a response, not an event, not a log line.
 */

const PROBE = fileURLToPath(new URL('../fixtures/bin/mcp-probe.mjs', import.meta.url));
const ENV_SECRET = 'env-secret-6f1c2a';
const HEADER_SECRET = 'header-secret-93be47';
const SECRETS = [ENV_SECRET, HEADER_SECRET];

const SERVERS = {
  docs: { command: 'node', args: ['/srv/docs.mjs', '--stdio'], env: { DOCS_TOKEN: ENV_SECRET } },
  remote: { url: 'https://mcp.example.test/mcp', headers: { Authorization: `Bearer ${HEADER_SECRET}` } },
};

let server: TestServer;
let probeDir: string;
const logLines: string[] = [];

function expectNoSecret(text: string, where: string): void {
  for (const secret of SECRETS) expect(text.includes(secret), `${secret} in ${where}`).toBe(false);
}

/** Every command line on the host that mentions the probe's run marker (the sandbox's and the CLI's own). */
function commandLines(marker: string): string[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      } catch {
        return '';
      }
    })
    .filter((line) => line.includes(marker));
}

interface ProbeReport {
  argv: string[];
  env: Record<string, string>;
  files: Record<string, string>;
  writable: boolean;
}

/**
 * Creates a session with SERVERS, runs the probe in it, and answers what the probe received, after
 * checking that no command line, response, event or log line carried a secret.
 */
async function probe(provider: string, name: string, extra: Record<string, unknown> = {}): Promise<ProbeReport> {
  const created = await reply(server.client.POST('/v1/sessions', { body: { provider, mcp_servers: SERVERS, ...extra } }));
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: created.body.id } }, body: { prompt: `use the tools [probe:${name}]` } }));
  expect(run.status).toBe(202);
  const reportFile = join(probeDir, `${name}.json`);
  await waitFor(() => existsSync(reportFile), `the probe's report of ${name}`, 20_000);
  const lines = commandLines(`[probe:${name}]`);
  if (provider !== 'claude') expect(lines.length).toBeGreaterThan(0); // claude's prompt is on stdin, not in argv
  for (const line of lines) expectNoSecret(line, `a command line: ${line}`);
  writeFileSync(join(probeDir, `${name}.release`), '');
  await waitFor(
    async () => ['completed', 'failed', 'interrupted'].includes((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.body.id } } }))).body.state),
    'the run to end',
    20_000,
  );
  const responses = [
    created.body,
    (await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: created.body.id } } }))).body,
    (await reply(server.client.GET('/v1/sessions'))).body,
    (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.body.id } } }))).body,
    (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.body.id } } }))).body,
  ];
  expectNoSecret(JSON.stringify(responses), 'the responses and events');
  expectNoSecret(logLines.join('\n'), 'the log');
  return JSON.parse(readFileSync(reportFile, 'utf8')) as ProbeReport;
}

describe.each(SERVER_MODES)('MCP servers per session (%s)', { timeout: 60_000 }, (mode, modeEnv) => {
  beforeAll(async () => {
    probeDir = scratchDir('asm-mcp-probe-');
    Object.assign(process.env, { MCP_PROBE_DIR: probeDir, AMP_API_KEY: 'test-amp-key' });
    server = await startServer(
      {
        ...modeEnv(),
        ASM_CLAUDE_BIN: PROBE,
        ASM_CODEX_BIN: PROBE,
        ASM_GEMINI_BIN: PROBE,
        ASM_AMP_BIN: PROBE,
        ASM_PASS_ENV: 'MCP_PROBE_DIR',
        ASM_MCP_MAX_SERVERS: '3',
      },
      { logLines },
    );
  });
  afterAll(async () => {
    await server.close();
    delete process.env.MCP_PROBE_DIR;
    delete process.env.AMP_API_KEY;
  });

  it('shows the servers with their secrets redacted', async () => {
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', mcp_servers: SERVERS } }));
    expect(res.status).toBe(201);
    expect(res.body.mcp_servers).toEqual({
      docs: { command: 'node', args: ['/srv/docs.mjs', '--stdio'], env: { DOCS_TOKEN: '[redacted]' } },
      remote: { url: 'https://mcp.example.test/mcp', headers: { Authorization: '[redacted]' } },
    });
    expect((await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: res.body.id } } }))).body.mcp_servers).toEqual(res.body.mcp_servers);
    expect((await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude' } }))).body.mcp_servers).toEqual({});
  });

  it('claude: a --mcp-config file in the session\'s read-only MCP folder', async () => {
    const report = await probe('claude', `claude-${mode}`);
    const path = report.argv[report.argv.indexOf('--mcp-config') + 1];
    expect(path).toBe('/run/asm-mcp/claude-mcp.json');
    expect(JSON.parse(report.files[path])).toEqual({
      mcpServers: {
        docs: { type: 'stdio', command: 'node', args: ['/srv/docs.mjs', '--stdio'], env: { DOCS_TOKEN: ENV_SECRET } },
        remote: { type: 'http', url: 'https://mcp.example.test/mcp', headers: { Authorization: `Bearer ${HEADER_SECRET}` } },
      },
    });
    expect(report.writable).toBe(false);
    expectNoSecret(JSON.stringify(report.argv), 'argv');
  });

  it('codex: -c mcp_servers overrides without secrets, the values in its environment', async () => {
    const report = await probe('codex', `codex-${mode}`, { permission_mode: 'bypass' }); // exec: the prompt is in argv
    const overrides = report.argv.flatMap((arg, i) => (report.argv[i - 1] === '-c' && arg.startsWith('mcp_servers.') ? [arg] : []));
    expect(overrides).toEqual([
      'mcp_servers.docs.command="node"',
      'mcp_servers.docs.args=["/srv/docs.mjs","--stdio"]',
      'mcp_servers.docs.env_vars=["DOCS_TOKEN"]',
      'mcp_servers.remote.url="https://mcp.example.test/mcp"',
      'mcp_servers.remote.env_http_headers={"Authorization" = "ASM_MCP_1_HEADER_0"}',
    ]);
    expect(report.env).toMatchObject({ DOCS_TOKEN: ENV_SECRET, ASM_MCP_1_HEADER_0: `Bearer ${HEADER_SECRET}` });
    expectNoSecret(JSON.stringify(report.argv), 'argv');
  });

  it('gemini: system settings with mcpServers, named by GEMINI_CLI_SYSTEM_SETTINGS_PATH', async () => {
    const report = await probe('gemini', `gemini-${mode}`);
    const path = report.env.GEMINI_CLI_SYSTEM_SETTINGS_PATH;
    expect(path).toBe('/run/asm-mcp/gemini-settings.json');
    expect(JSON.parse(report.files[path])).toEqual({
      mcpServers: {
        docs: { command: 'node', args: ['/srv/docs.mjs', '--stdio'], env: { DOCS_TOKEN: ENV_SECRET } },
        remote: { httpUrl: 'https://mcp.example.test/mcp', headers: { Authorization: `Bearer ${HEADER_SECRET}` } },
      },
    });
    expect(report.writable).toBe(false);
  });

  it('amp: an --mcp-config file of its settings shape', async () => {
    const report = await probe('amp', `amp-${mode}`);
    const path = report.argv[report.argv.indexOf('--mcp-config') + 1];
    expect(JSON.parse(report.files[path])).toEqual({
      docs: { command: 'node', args: ['/srv/docs.mjs', '--stdio'], env: { DOCS_TOKEN: ENV_SECRET } },
      remote: { url: 'https://mcp.example.test/mcp', headers: { Authorization: `Bearer ${HEADER_SECRET}` } },
    });
  });

  it('the logger redacts a session record or body logged whole', () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (line: string) => void lines.push(line) } as DestinationStream);
    log.info({ session: { id: 'ses_1', mcp_server_config: SERVERS }, body: { mcp_servers: SERVERS } }, 'a careless line');
    log.info({ mcp_servers: SERVERS, mcp_server_config: SERVERS }, 'another');
    expect(lines).toHaveLength(2);
    expectNoSecret(lines.join('\n'), 'the log');
  });

  it.each([
    ['the shell provider', { provider: 'shell', mcp_servers: SERVERS }, 'mcp_servers', 'shell cannot take MCP servers'],
    ['a name that cannot make tool names', { provider: 'claude', mcp_servers: { 'a b': { command: 'x' } } }, 'mcp_servers.a b', 'unknown field'],
    ['a server of neither shape', { provider: 'claude', mcp_servers: { a: { command: 'x', url: 'https://x' } } }, 'mcp_servers.a', ''],
    ['a URL that is not http(s)', { provider: 'claude', mcp_servers: { a: { url: 'file:///etc/passwd' } } }, 'mcp_servers.a', ''],
    ['more servers than ASM_MCP_MAX_SERVERS', { provider: 'claude', mcp_servers: { a: { command: 'x' }, b: { command: 'x' }, c: { command: 'x' }, d: { command: 'x' } } }, 'mcp_servers', 'ASM_MCP_MAX_SERVERS'],
    ['more bytes than ASM_MCP_MAX_CONFIG_BYTES', { provider: 'claude', mcp_servers: { a: { command: 'x', args: Array.from({ length: 20 }, () => 'y'.repeat(4000)) } } }, 'mcp_servers', 'ASM_MCP_MAX_CONFIG_BYTES'],
    ['codex: two values for one variable', { provider: 'codex', mcp_servers: { a: { command: 'x', env: { TOKEN: '1' } }, b: { command: 'x', env: { TOKEN: '2' } } } }, 'mcp_servers.b.env.TOKEN', 'different values'],
    ['codex: a variable codex runs with', { provider: 'codex', mcp_servers: { a: { command: 'x', env: { OPENAI_API_KEY: 'k' } } } }, 'mcp_servers.a.env.OPENAI_API_KEY', "codex's"],
  ])('refuses %s with 400 naming the field, echoing no secret', async (_what, body, field, message) => {
    // Raw fetch: these bodies are malformed on purpose.
    const res = await server.request('POST', '/v1/sessions', body);
    expect(res.status).toBe(400);
    expect(res.body.error.details.field).toBe(field);
    expect(res.body.error.message).toContain(message);
    expectNoSecret(JSON.stringify(res.body), 'the error');
  });
});

describe('MCP servers without a sandbox', () => {
  it('are refused: no folder would be the session\'s alone', async () => {
    const unsandboxed = await startServer({ ASM_SANDBOX: 'none' });
    try {
      const res = await reply(unsandboxed.client.POST('/v1/sessions', { body: { provider: 'claude', mcp_servers: SERVERS } }));
      expect(res.status).toBe(400);
      expect(res.body.error.details.field).toBe('mcp_servers');
      expect(res.body.error.message).toContain('ASM_SANDBOX=bwrap');
      expect((await reply(unsandboxed.client.POST('/v1/sessions', { body: { provider: 'claude' } }))).status).toBe(201);
    } finally {
      await unsandboxed.close();
    }
  });
});
