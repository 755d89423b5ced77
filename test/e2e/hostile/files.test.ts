import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reply, startServer, type TestServer } from '../../helpers/server.js';

/**
 * Hostile tenant B and the files of the service's host: B names files the service can read (its
 * /etc/shadow, keys outside the directory the operator lent), probes which paths exist from the
 * refusals, and swaps tenant A's project folder for a symlink leading out of the workspace root.
 */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const A = { authorization: `Bearer ${KEY_A}` };
const B = { authorization: `Bearer ${KEY_B}` };

let server: TestServer;
/** ASM_SSH_FILES_DIR, with one key the operator lends. */
let sshFiles: string;
/** A directory outside both the workspace root and ASM_SSH_FILES_DIR, with a readable file. */
let outside: string;

const ssh = (extra: Record<string, string>) => ({ kind: 'ssh' as const, host: '127.0.0.1', user: 'agent', ...extra });

async function createSession(headers: Record<string, string>, body: Record<string, unknown>) {
  return reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', ...body }, headers }));
}

/** The directory a tenant's sessions start in when they name no cwd: its workspace root. */
async function rootOf(headers: Record<string, string>): Promise<string> {
  return (await createSession(headers, {})).body.cwd;
}

beforeAll(async () => {
  sshFiles = mkdtempSync(join(tmpdir(), 'asm-ssh-files-'));
  writeFileSync(join(sshFiles, 'id_ed25519'), 'a key the operator lends\n');
  outside = mkdtempSync(join(tmpdir(), 'asm-outside-'));
  writeFileSync(join(outside, 'id_rsa'), 'the service account key\n');
  symlinkSync(join(outside, 'id_rsa'), join(sshFiles, 'leads-out'));
  symlinkSync(join(sshFiles, 'id_ed25519'), join(sshFiles, 'stays-in'));
  server = await startServer({ ASM_API_KEYS: `${KEY_A}:tenant-a,${KEY_B}:tenant-b`, ASM_SSH_HOSTS: '127.0.0.1', ASM_SSH_FILES_DIR: sshFiles });
});
afterAll(async () => {
  await server?.close();
  rmSync(sshFiles, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

describe('B names ssh files the service can read', () => {
  const NOT_CONFINED = { kind: 'bad_request', message: 'execution_surface.identity_file: not a readable file inside ASM_SSH_FILES_DIR', details: { field: 'execution_surface.identity_file' } };

  it('/etc/shadow as identity_file gets the same refusal as a file that does not exist', async () => {
    const shadow = await createSession(B, { execution_surface: ssh({ identity_file: '/etc/shadow' }) });
    expect(shadow.status).toBe(400);
    expect(shadow.body.error).toMatchObject(NOT_CONFINED);
    for (const missing of ['/nonexistent/key', join(sshFiles, 'missing'), join(outside, 'missing')]) {
      const res = await createSession(B, { execution_surface: ssh({ identity_file: missing }) });
      expect(res.status, missing).toBe(400);
      expect(res.body, missing).toEqual(shadow.body);
    }
  });

  it('a readable file outside ASM_SSH_FILES_DIR, and a symlink inside it that leads out, are refused alike', async () => {
    for (const path of [join(outside, 'id_rsa'), join(sshFiles, 'leads-out'), join(sshFiles, '..', 'asm-outside-x'), sshFiles]) {
      const res = await createSession(B, { execution_surface: ssh({ identity_file: path }) });
      expect(res.status, path).toBe(400);
      expect(res.body.error, path).toMatchObject(NOT_CONFINED);
    }
    const knownHosts = await createSession(B, { execution_surface: ssh({ known_hosts_file: '/etc/shadow' }) });
    expect(knownHosts.body.error).toMatchObject({ kind: 'bad_request', message: 'execution_surface.known_hosts_file: not a readable file inside ASM_SSH_FILES_DIR' });
  });

  it('a per-run surface is refused the same way', async () => {
    const session = await createSession(B, {});
    const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'x', execution_surface: ssh({ identity_file: '/etc/shadow' }) }, headers: B }));
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject(NOT_CONFINED);
  });

  it('a host the operator did not list is refused before any file is looked at', async () => {
    const shadow = await createSession(B, { execution_surface: ssh({ host: '10.0.0.9', identity_file: '/etc/shadow' }) });
    const missing = await createSession(B, { execution_surface: ssh({ host: '10.0.0.9', identity_file: '/nonexistent/key' }) });
    expect(shadow.status).toBe(403);
    expect(shadow.body.error).toMatchObject({ kind: 'forbidden', details: { field: 'execution_surface.host' } });
    expect(missing.body).toEqual(shadow.body);
  });

  it('the key the operator lends is taken, also through a symlink that stays inside', async () => {
    for (const path of [join(sshFiles, 'id_ed25519'), join(sshFiles, 'stays-in')]) {
      const res = await createSession(B, { execution_surface: ssh({ identity_file: path, known_hosts_file: path }) });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
  });

  it('without ASM_SSH_FILES_DIR both fields are refused with 403 naming the field and the setting', async () => {
    const bare = await startServer({ ASM_SSH_HOSTS: '127.0.0.1' });
    try {
      for (const field of ['identity_file', 'known_hosts_file']) {
        const res = await reply(bare.client.POST('/v1/sessions', { body: { provider: 'claude', execution_surface: ssh({ [field]: join(sshFiles, 'id_ed25519') }) } }));
        expect(res.status).toBe(403);
        expect(res.body.error).toMatchObject({ kind: 'forbidden', details: { field: `execution_surface.${field}` } });
        expect(res.body.error.message).toContain('ASM_SSH_FILES_DIR');
      }
      expect((await reply(bare.client.POST('/v1/sessions', { body: { provider: 'claude', execution_surface: ssh({}) } }))).status).toBe(201);
    } finally {
      await bare.close();
    }
  });
});

describe("B's cwd probes and A's project folder", () => {
  it('cwd refusals do not tell whether a path outside the root exists', async () => {
    const exists = await createSession(B, { cwd: outside });
    const missing = await createSession(B, { cwd: join(outside, 'missing') });
    expect(exists.status).toBe(403);
    expect(missing.status).toBe(403);
    expect(missing.body.error.message.replace(join(outside, 'missing'), 'P')).toBe(exists.body.error.message.replace(outside, 'P'));
    // The same through symlinks B left in its own folder: one to a directory outside, one to nothing.
    const rootB = await rootOf(B);
    symlinkSync(outside, join(rootB, 'to-existing'));
    symlinkSync(join(outside, 'missing'), join(rootB, 'to-missing'));
    const viaExisting = await createSession(B, { cwd: 'to-existing' });
    const viaMissing = await createSession(B, { cwd: 'to-missing' });
    expect(viaExisting.status).toBe(403);
    expect(viaMissing.status).toBe(403);
    expect(viaMissing.body.error.message.replace('to-missing', 'P')).toBe(viaExisting.body.error.message.replace('to-existing', 'P'));
    expect(viaExisting.body.error.details).toEqual({ field: 'cwd' });
  });

  it("A's folder replaced by a symlink to outside the root between runs: A's next run does not start", async () => {
    const rootA = await rootOf(A);
    const project = join(rootA, 'a-project');
    mkdirSync(project);
    const session = await createSession(A, { cwd: 'a-project' });
    expect(session.status).toBe(201);
    const first = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'hello [fixture:c1-hello]', wait: true }, headers: A }));
    expect(first.body.state).toBe('completed');

    // Between A's runs the folder becomes a symlink leading out of the root (B's doing, through
    // anything that can write to the shared root).
    renameSync(project, join(rootA, 'a-project.moved'));
    symlinkSync(outside, project);

    const second = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'hello [fixture:c1-hello]', wait: true }, headers: A }));
    expect(second.body.state).toBe('failed');
    expect(second.body.result.error).toMatchObject({ kind: 'forbidden', details: { field: 'cwd' } });
    expect(second.body.result.error.message).toContain('outside the workspace root');
    const events = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: second.body.id } }, headers: A }));
    expect(events.body.events.map((e: any) => e.kind)).not.toContain('run_started');
  });
});
