import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../../src/app.js';
import { loadConfig } from '../../../src/config.js';
import { reply, startServer, type TestServer } from '../../helpers/server.js';
import { sha256, tenant, tenantsFile } from '../../helpers/tenants.js';

/**
 * Tenant B against the tenancy configuration: keys (known to the service only as digests), granted
 * providers (shell, which runs commands on the host, only where listed), and each tenant's own
 * workspace root. Then the tenants file itself, checked whole at start-up, ASM_API_KEYS beside it,
 * and the keyless quick start, where the operator is the only user.
 */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const KEY_C = 'key-c-abcdefabcdef0123';
const A = { authorization: `Bearer ${KEY_A}` };
const B = { authorization: `Bearer ${KEY_B}` };
const C = { authorization: `Bearer ${KEY_C}` };

let server: TestServer;
/** A's own workspace root, outside ASM_WORKSPACE_ROOT. */
let rootA: string;

const cleanups: Array<() => void> = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The message with which start-up (loadConfig, then createApp) refuses this environment. */
async function startupError(env: Record<string, string>): Promise<string> {
  const workspace = tempDir('asm-startup-');
  try {
    const app = await createApp(loadConfig({ ASM_WORKSPACE_ROOT: workspace, ...env }), pino({ level: 'silent' }));
    await app.close();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('start-up succeeded');
}

describe('hostile tenant: keys, providers and workspaces', () => {
  beforeAll(async () => {
    rootA = tempDir('asm-root-a-');
    server = await startServer({
      ASM_TENANTS_FILE: tenantsFile([
        tenant('tenant-a', KEY_A, { providers: ['shell', 'claude'], workspace_root: rootA }),
        tenant('tenant-b', KEY_B, { providers: ['claude'] }),
      ]),
      // Tenant C comes from the quick start's variable: role tenant, and the default providers (no shell).
      ASM_API_KEYS: `${KEY_C}:tenant-c`,
    });
  });
  afterAll(async () => {
    await server?.close();
    for (const cleanup of cleanups) cleanup();
  });

  it("B cannot authenticate with A's key digest, the one thing the tenants file holds", async () => {
    for (const digest of [sha256(KEY_A), sha256(KEY_A).toUpperCase()]) {
      const res = await reply(server.client.GET('/v1/sessions', { headers: { authorization: `Bearer ${digest}` } }));
      expect(res.status).toBe(401);
      expect(res.body.error.message).toBe('unknown API key');
      await expect(server.stream(`token=${digest}`).opened).rejects.toThrow(/401/);
    }
    expect((await reply(server.client.GET('/v1/sessions', { headers: A }))).status).toBe(200);
  });

  it('B cannot use shell, which it was not granted, nor any other provider not granted', async () => {
    const shell = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B }));
    expect(shell.status).toBe(403);
    expect(shell.body.error).toMatchObject({ kind: 'forbidden', details: { field: 'provider' } });
    expect(shell.body.error.message).toContain('shell runs commands on the host');
    for (const provider of ['codex', 'gemini', 'amp']) {
      const res = await reply(server.client.POST('/v1/sessions', { body: { provider }, headers: B }));
      expect(res.status, provider).toBe(403);
      expect(res.body.error).toMatchObject({ kind: 'forbidden', details: { field: 'provider' } });
    }
    expect((await reply(server.client.GET('/v1/sessions', { headers: B }))).body.sessions).toEqual([]);
    expect((await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude' }, headers: B }))).status).toBe(201);
  });

  it('B is shown only the providers it may use', async () => {
    const listed = (await reply(server.client.GET('/v1/providers', { headers: B }))).body.providers.map((p: any) => p.name);
    expect(listed).toEqual(['claude']);
    expect((await reply(server.client.GET('/v1/providers/{name}', { params: { path: { name: 'shell' } }, headers: B }))).status).toBe(404);
    expect((await reply(server.client.POST('/v1/providers/{name}/resolve', { params: { path: { name: 'shell' } }, body: {}, headers: B }))).status).toBe(404);
    expect((await reply(server.client.GET('/v1/providers', { headers: A }))).body.providers.map((p: any) => p.name).sort()).toEqual(['claude', 'shell']);
  });

  it("B cannot point a session's cwd into A's or C's workspace", async () => {
    const a = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: A }));
    expect(a.body.cwd).toBe(realpathSync(rootA));
    const ownB = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude' }, headers: B }));
    expect(ownB.body.cwd).toBe(join(realpathSync(server.workspace), 'tenant-b'));
    for (const cwd of [rootA, '../tenant-c', join(server.workspace, 'tenant-c'), '..', server.workspace]) {
      const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', cwd }, headers: B }));
      expect(res.status, cwd).toBe(403);
      expect(res.body.error).toMatchObject({ kind: 'forbidden', details: { field: 'cwd' } });
    }
  });

  it('ASM_API_KEYS still works: C authenticates, has the role tenant and no shell', async () => {
    const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude' }, headers: C }));
    expect(session.status).toBe(201);
    expect(session.body.cwd).toBe(join(realpathSync(server.workspace), 'tenant-c'));
    expect((await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: C }))).status).toBe(403);
    expect((await reply(server.client.GET('/metrics', { headers: C, parseAs: 'text' }))).status).toBe(403);
    expect((await reply(server.client.GET('/v1/sessions', { headers: C }))).body.sessions.map((s: any) => s.id)).toEqual([session.body.id]);
    const policy = server.app.tenants.get('tenant-c');
    expect(policy).toMatchObject({ role: 'tenant', quotas: { sessions: 1_000, activeRuns: 20 }, rate: { max: 6_000, windowMs: 60_000 } });
  });
});

describe('the tenants file, checked whole at start-up', () => {
  const valid = () => tenant('tenant-a', KEY_A);
  it.each<[string, unknown, string]>([
    ['is not JSON', '[{"id": "tenant-a",', 'not valid JSON'],
    ['is neither a list nor an object with tenants', '"tenant-a"', 'must be a JSON array of tenants'],
    ['holds a plaintext key', [{ id: 'tenant-a', key_sha256: [KEY_A] }], '[0].key_sha256[0]: must be a SHA-256 digest'],
    ['has a tenant without keys', [{ id: 'tenant-a', key_sha256: [] }], '[0].key_sha256: must be a non-empty array'],
    ['has an id that is no plain name', [tenant('../etc', KEY_A)], '[0].id: must be 1 to 64 letters'],
    ['has an unknown role', [tenant('tenant-a', KEY_A, { role: 'root' })], '[0].role: must be "admin" or "tenant"'],
    ['misspells a field', [{ ...valid(), key_sha265: [] }], '[0].key_sha265: unknown field'],
    ['grants an unknown provider', [tenant('tenant-a', KEY_A, { providers: ['shell', 'bash'] })], '[0].providers[1]: unknown provider "bash"'],
    ['names a workspace root that does not exist', [tenant('tenant-a', KEY_A, { workspace_root: '/no/such/root' })], '[0].workspace_root: /no/such/root is not a directory'],
    ['sets a quota below its least value', { tenants: [tenant('tenant-a', KEY_A, { quotas: { sessions: 0 } })] }, 'tenants[0].quotas.sessions: must be an integer >= 1'],
    ['sets an unknown quota', { tenants: [tenant('tenant-a', KEY_A, { quotas: { cpu: 1 } })] }, 'tenants[0].quotas.cpu: unknown field'],
    ['sets a rate window that is no number', { tenants: [tenant('tenant-a', KEY_A, { rate: { window_ms: '1s' } })] }, 'tenants[0].rate.window_ms: must be an integer >= 1'],
    ['sets a bad default', { defaults: { rate: { max: 0 } }, tenants: [valid()] }, 'defaults.rate.max: must be an integer >= 1'],
    ['defines a tenant twice', [valid(), tenant('tenant-a', KEY_B)], '[1].id: tenant "tenant-a" is already defined at [0]'],
    ['gives two tenants the same key', [valid(), tenant('tenant-b', KEY_A)], '[1].key_sha256[0]: this digest is already a key of tenant "tenant-a"'],
    ['defines no tenant', { tenants: [] }, 'tenants: no tenant is defined'],
  ])('refuses a file that %s, naming the file and the JSON path', async (_what, doc, problem) => {
    const file = tenantsFile(doc);
    expect(await startupError({ ASM_TENANTS_FILE: file })).toContain(`ASM_TENANTS_FILE: ${file}: ${problem}`);
  });

  it('refuses a file it cannot read', async () => {
    const file = join(tempDir('asm-tenants-missing-'), 'tenants.json');
    expect(await startupError({ ASM_TENANTS_FILE: file })).toBe(`ASM_TENANTS_FILE: ${file}: cannot read it (ENOENT)`);
  });

  it('refuses a tenant defined both in the file and in ASM_API_KEYS', async () => {
    const file = tenantsFile([valid()]);
    expect(await startupError({ ASM_TENANTS_FILE: file, ASM_API_KEYS: `${KEY_B}:tenant-a` })).toBe(
      `ASM_API_KEYS: tenant "tenant-a" is also defined in ${file}: [0]; define each tenant once`,
    );
    expect(await startupError({ ASM_TENANTS_FILE: file, ASM_API_KEYS: `${KEY_A}:tenant-b` })).toContain('a key of tenant "tenant-b" is also a key in ASM_TENANTS_FILE');
  });

  it('carries quotas and the rate on each policy: its own, else the file\'s defaults, else the built-in ones', async () => {
    const file = tenantsFile({
      defaults: { providers: ['shell'], quotas: { sessions: 5, output_bytes_per_run: 1024 }, rate: { max: 50 } },
      tenants: [tenant('tenant-a', KEY_A, { role: 'admin', quotas: { active_runs: 2, queued_runs: 0, connections: 3, metadata_bytes: 100 }, rate: { window_ms: 1_000 } })],
    });
    const local = await startServer({ ASM_TENANTS_FILE: file, ASM_API_KEYS: `${KEY_C}:tenant-c` });
    try {
      expect(local.app.tenants.get('tenant-a')).toMatchObject({
        role: 'admin',
        quotas: { sessions: 5, activeRuns: 2, queuedRuns: 0, connections: 3, metadataBytes: 100, outputBytesPerRun: 1024 },
        rate: { max: 50, windowMs: 1_000 },
      });
      // The file's defaults reach the ASM_API_KEYS tenants too: here they grant shell.
      const c = local.app.tenants.get('tenant-c');
      expect(c).toMatchObject({ role: 'tenant', quotas: { sessions: 5, activeRuns: 20, outputBytesPerRun: 1024 }, rate: { max: 50, windowMs: 60_000 } });
      expect([...c.providers]).toEqual(['shell']);
      const shell = await reply(local.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: C }));
      expect(shell.status).toBe(201);
    } finally {
      await local.close();
    }
  });
});

describe('the keyless quick start', () => {
  it('keeps shell and the global operations for its one user, the operator', async () => {
    const local = await startServer();
    try {
      expect((await reply(local.client.GET('/v1/providers'))).body.providers.map((p: any) => p.name)).toContain('shell');
      const session = await reply(local.client.POST('/v1/sessions', { body: { provider: 'shell' } }));
      expect(session.body.cwd).toBe(realpathSync(local.workspace));
      const run = await reply(local.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'echo operator', wait: true } }));
      expect(run.body).toMatchObject({ state: 'completed', result: { text: 'operator\n' } });
      expect((await reply(local.client.GET('/metrics', { parseAs: 'text' }))).status).toBe(200);
      expect((await reply(local.client.GET('/v1/nodes'))).status).toBe(200);
      expect((await reply(local.client.POST('/v1/queues/{lane}/pause', { params: { path: { lane: 'skill' } } }))).status).toBe(200);
    } finally {
      await local.close();
    }
  });
});
