/**
 * Session workspaces over the API end to end: files in (one file, a tar or tar.gz), a shell run that
 * edits them, the run's diff (event, JSON, patch), files out (one file, a folder as tar), and every
 * way out of the workspace refused: `..`, absolute paths, symlinks planted in the workspace, and tars
 * that carry them.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RequestBody } from '../../src/client/index.js';
import { reply, SERVER_MODES, startServer, type TestServer } from '../helpers/server.js';
import { scratchDir } from '../helpers/sandbox.js';
import { entriesOf, rawRequest, tarOf } from '../helpers/tar.js';
import { waitFor } from '../helpers/wait.js';
import { logGitCommands, type GitLog } from '../helpers/git-log.js';
import { workspaceFingerprint } from '../../src/backends/workspace-fingerprint.js';

let server: TestServer;
afterEach(async () => {
  await server?.close();
});

async function newSession(body: Partial<RequestBody<'/v1/sessions', 'post'>> = { workspace: { archive_upload: true } }): Promise<any> {
  const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', ...body } }));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

async function upload(sessionId: string, archive: Buffer, query = ''): Promise<{ status: number; body: any }> {
  // Raw fetch: the archive is the raw body, which the client's types do not take (requestBody: never).
  const res = await fetch(`${server.url}/v1/sessions/${sessionId}/files${query}`, { method: 'POST', headers: { 'content-type': 'application/x-tar' }, body: archive });
  return { status: res.status, body: await res.json() };
}

async function run(sessionId: string, prompt: string): Promise<any> {
  const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt, wait: true } }));
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

async function eventsOf(runId: string): Promise<any[]> {
  return (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: runId } } }))).body.events;
}

const PROJECT = [
  { path: 'a.txt', body: 'one\ntwo\n' },
  { path: 'dir/', type: 'Directory' as const, mode: 0o755 },
  { path: 'dir/b.txt', body: 'bee\n' },
  { path: 'untouched.txt', body: 'same\n' },
  { path: 'bin.dat', body: 'x\0y' },
];

describe.each(SERVER_MODES)('workspace files and diffs, %s', (_mode, modeEnv) => {
  it('uploads a tar.gz, diffs a run that edits two files and adds one, and downloads the result', async () => {
    server = await startServer(modeEnv());
    const session = await newSession();
    expect(session.cwd).toBe(join(server.workspace, session.id));
    const uploaded = await upload(session.id, tarOf(PROJECT, { gzip: true }));
    expect(uploaded).toEqual({ status: 201, body: { files: 4, directories: 1, bytes: 20 } });

    const done = await run(session.id, "sed -i 's/two/TWO/' a.txt && echo sea >> dir/b.txt && printf 'new\\n' > c.txt");
    expect(done.state).toBe('completed');
    const events = await eventsOf(done.id);
    const kinds = events.map((e) => e.kind);
    expect(kinds.slice(-2)).toEqual(['workspace_diff', 'result']);
    const summary = events.at(-2).payload;
    expect(summary.files).toEqual([
      { path: 'a.txt', status: 'modified', additions: 1, deletions: 1, binary: false },
      { path: 'c.txt', status: 'added', additions: 1, deletions: 0, binary: false },
      { path: 'dir/b.txt', status: 'modified', additions: 1, deletions: 0, binary: false },
    ]);
    expect(summary).toMatchObject({ changed_files: 3, additions: 3, deletions: 1, files_truncated: false, patch_truncated: false });

    const json = await reply(server.client.GET('/v1/runs/{id}/diff', { params: { path: { id: done.id } } }));
    expect(json.status).toBe(200);
    expect(json.body.summary.files.map((f: any) => f.path)).toEqual(['a.txt', 'c.txt', 'dir/b.txt']);
    const patch = await reply(server.client.GET('/v1/runs/{id}/diff', { params: { path: { id: done.id } }, headers: { accept: 'text/x-diff' }, parseAs: 'text' }));
    expect(patch.headers.get('content-type')).toContain('text/x-diff');
    const text = patch.body as string;
    expect(text).toContain('diff --git a/a.txt b/a.txt');
    expect(text).toContain('-two\n+TWO');
    expect(text).toContain('+++ b/c.txt');
    expect(text).not.toContain('untouched.txt');

    // A second run: its own diff has only what it changed, the session's has both runs' changes.
    const second = await run(session.id, 'rm untouched.txt && printf "z\\0w" > bin.dat');
    const secondDiff = (await reply(server.client.GET('/v1/runs/{id}/diff', { params: { path: { id: second.id } } }))).body.summary;
    expect(secondDiff.files).toEqual([
      { path: 'bin.dat', status: 'modified', additions: null, deletions: null, binary: true },
      { path: 'untouched.txt', status: 'deleted', additions: 0, deletions: 1, binary: false },
    ]);
    const whole = (await reply(server.client.GET('/v1/sessions/{id}/diff', { params: { path: { id: session.id } } }))).body.summary;
    expect(whole.files.map((f: any) => `${f.status} ${f.path}`)).toEqual(['modified a.txt', 'modified bin.dat', 'added c.txt', 'modified dir/b.txt', 'deleted untouched.txt']);

    // A run that changes nothing has an empty diff and no workspace_diff event.
    const idle = await run(session.id, 'cat a.txt');
    expect((await eventsOf(idle.id)).map((e) => e.kind)).not.toContain('workspace_diff');
    expect((await reply(server.client.GET('/v1/runs/{id}/diff', { params: { path: { id: idle.id } } }))).body.summary).toMatchObject({ changed_files: 0, files: [] });

    const file = await reply(server.client.GET('/v1/sessions/{id}/files/{*}', { params: { path: { id: session.id, '*': 'a.txt' } }, parseAs: 'text' }));
    expect(file.status).toBe(200);
    expect(file.body).toBe('one\nTWO\n');
    const nested = await reply(server.client.GET('/v1/sessions/{id}/files/{*}', { params: { path: { id: session.id, '*': 'dir/b.txt' } }, parseAs: 'text' }));
    expect(nested).toMatchObject({ status: 200, body: 'bee\nsea\n' });
    const listing = await reply(server.client.GET('/v1/sessions/{id}/files', { params: { path: { id: session.id }, query: { limit: 2 } } }));
    expect(listing.body.entries.map((e: any) => `${e.type} ${e.name}`)).toEqual(['file a.txt', 'file bin.dat']);
    const rest = await reply(server.client.GET('/v1/sessions/{id}/files', { params: { path: { id: session.id }, query: { limit: 2, cursor: listing.body.next_cursor } } }));
    expect(rest.body).toMatchObject({ entries: [{ name: 'c.txt', size: 4 }, { name: 'dir', type: 'directory' }], next_cursor: null });
    const folder = await reply(server.client.GET('/v1/sessions/{id}/files/{*}', { params: { path: { id: session.id, '*': 'dir' } }, headers: { accept: 'application/x-tar' }, parseAs: 'arrayBuffer' }));
    expect(folder.status).toBe(200);
    expect(await entriesOf(Buffer.from(folder.body as ArrayBuffer))).toEqual(new Map([['', 'Directory'], ['b.txt', 'bee\nsea\n']]));
    const all = await reply(server.client.GET('/v1/sessions/{id}/files', { params: { path: { id: session.id } }, headers: { accept: 'application/x-tar' }, parseAs: 'arrayBuffer' }));
    expect([...(await entriesOf(Buffer.from(all.body as ArrayBuffer))).keys()].sort()).toEqual(['', 'a.txt', 'bin.dat', 'c.txt', 'dir', 'dir/b.txt']);
  });
});

describe('workspace diffs: snapshots by stat data', () => {
  let gitLog: GitLog | undefined;
  afterEach(() => gitLog?.restore());

  /** Every git command the service runs from now on, since the last call. */
  function logGit(): () => string[] {
    gitLog = logGitCommands();
    return gitLog.since;
  }

  it('once the workspace has settled, a run that changes nothing runs no git, and a change is still in the next diff', async () => {
    const gitSince = logGit();
    server = await startServer();
    const session = await newSession({});
    await run(session.id, 'echo one > a.txt');
    // Seconds later a.txt's times vouch for it (workspace-fingerprint.ts, SETTLED_MS).
    await waitFor(() => workspaceFingerprint(session.cwd, 256), 'the workspace to settle');
    gitSince();
    // The first snapshot since: git, and the fingerprint kept with its tree.
    await run(session.id, 'cat a.txt');
    expect(gitSince().filter((line) => line.includes('add --all'))).toHaveLength(1);
    const idle = await run(session.id, 'cat a.txt');
    expect(gitSince()).toEqual([]);
    expect((await eventsOf(idle.id)).map((e) => e.kind)).not.toContain('workspace_diff');
    const sessionDiff = async () => (await reply(server.client.GET('/v1/sessions/{id}/diff', { params: { path: { id: session.id } } }))).body.summary.files.map((f: any) => `${f.status} ${f.path}`);
    expect(await sessionDiff()).toEqual(['added a.txt']);

    const edit = await run(session.id, 'echo two >> a.txt');
    expect(gitSince().filter((line) => line.includes('add --all'))).toHaveLength(1);
    const diff = (await reply(server.client.GET('/v1/runs/{id}/diff', { params: { path: { id: edit.id } } }))).body.summary;
    expect(diff.files.map((f: any) => `${f.status} ${f.path} +${f.additions} -${f.deletions}`)).toEqual(['modified a.txt +1 -0']);

    // A file put between runs: the next run changes nothing, and the session's diff still takes it in.
    expect((await fetch(`${server.url}/v1/sessions/${session.id}/files/b.txt`, { method: 'PUT', body: 'bee\n' })).status).toBe(201);
    await run(session.id, 'true');
    expect(await sessionDiff()).toEqual(['added a.txt', 'added b.txt']);
  });

  it('runs git for every snapshot with ASM_DIFF_STAT_MAX_ENTRIES=0', async () => {
    const gitSince = logGit();
    server = await startServer({ ASM_DIFF_STAT_MAX_ENTRIES: '0' });
    const session = await newSession({});
    await run(session.id, 'echo one > a.txt');
    await waitFor(() => workspaceFingerprint(session.cwd, 256), 'the workspace to settle');
    gitSince();
    await run(session.id, 'cat a.txt');
    await run(session.id, 'cat a.txt');
    expect(gitSince().filter((line) => line.includes('add --all'))).toHaveLength(4);
  });
});

describe('workspace files: what stays inside', () => {
  it('writes one file with PUT, making its folders, and refuses `..`, absolute paths and symlinks out', async () => {
    server = await startServer();
    const session = await newSession();
    const outside = scratchDir('asm-outside-');
    writeFileSync(join(outside, 'secret'), 'keep');
    // Raw fetch: the file is the raw body, which the client's types do not take (requestBody: never).
    const put = await fetch(`${server.url}/v1/sessions/${session.id}/files/src/deep/main.py`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"not": "parsed"}' });
    expect(put.status).toBe(201);
    expect(readFileSync(join(session.cwd, 'src/deep/main.py'), 'utf8')).toBe('{"not": "parsed"}');

    const base = `/v1/sessions/${session.id}/files`;
    // Raw requests: paths with `..` and `//`, which fetch (and so the client) would resolve before sending.
    for (const path of [`${base}/../../x`, `${base}/src/../../x`, `${base}//etc/x`, `${base}/%2e%2e/x`]) {
      const res = await rawRequest(server.url, 'PUT', path, 'evil');
      expect(res.status, `${path}: ${JSON.stringify(res.body)}`).toBe(403);
      expect(res.body.error).toMatchObject({ kind: 'forbidden', details: { field: 'path' } });
    }
    expect((await rawRequest(server.url, 'PUT', `${base}//tmp/asm-abs-${session.id}`, 'evil')).status).toBe(403);
    expect(existsSync(`/tmp/asm-abs-${session.id}`)).toBe(false);
    const folderOf = (path: string) => reply(server.client.GET('/v1/sessions/{id}/files', { params: { path: { id: session.id }, query: { path } } }));
    expect((await folderOf('..')).status).toBe(403);
    expect((await folderOf('/etc')).status).toBe(403);

    // What an agent could plant: a symlink to a folder outside, one to a file outside.
    symlinkSync(outside, join(session.cwd, 'out'));
    symlinkSync(join(outside, 'secret'), join(session.cwd, 'secret-link'));
    // Raw requests: one loop over both methods, the PUTs with raw bodies.
    for (const [method, path] of [
      ['PUT', `${base}/out/secret`],
      ['PUT', `${base}/out/new`],
      ['PUT', `${base}/secret-link`],
      ['GET', `${base}/secret-link`],
      ['GET', `${base}/out/secret`],
      ['GET', `${base}?path=out`],
    ]) {
      const res = await rawRequest(server.url, method, path, method === 'PUT' ? 'evil' : undefined);
      expect(res.status, `${method} ${path}`).toBe(403);
    }
    expect(readFileSync(join(outside, 'secret'), 'utf8')).toBe('keep');
    expect(existsSync(join(outside, 'new'))).toBe(false);
    // The listing shows the symlinks as what they are.
    const listing = await reply(server.client.GET('/v1/sessions/{id}/files', { params: { path: { id: session.id } } }));
    expect(listing.body.entries.filter((e: any) => e.type === 'symlink').map((e: any) => e.name)).toEqual(['out', 'secret-link']);
  });

  it('refuses tars with ../x, absolute names, links out, hard links and devices, writing nothing outside', async () => {
    server = await startServer();
    const session = await newSession();
    const outside = scratchDir('asm-outside-');
    const hostile: Array<[string, Parameters<typeof tarOf>[0]]> = [
      ['../x', [{ path: '../x', body: 'evil' }]],
      ['a/../../x', [{ path: 'a/../../x', body: 'evil' }]],
      ['absolute', [{ path: join(outside, 'abs'), body: 'evil' }]],
      ['symlink out', [{ path: 'link', type: 'SymbolicLink', linkpath: outside }]],
      ['relative symlink out', [{ path: 'link', type: 'SymbolicLink', linkpath: '../../../../../../..' + outside }]],
      ['file through a symlink', [{ path: 'inner', type: 'SymbolicLink', linkpath: '.' }, { path: 'inner/x', body: 'through' }]],
      ['hard link', [{ path: 'hard', type: 'Link', linkpath: join(outside, 'target') }]],
      ['device', [{ path: 'dev', type: 'CharacterDevice', devmaj: 1, devmin: 3 }]],
    ];
    for (const [name, entries] of hostile) {
      const res = await upload(session.id, tarOf(entries));
      expect(res.status, `${name}: ${JSON.stringify(res.body)}`).toBe(403);
      expect(res.body.error.kind).toBe('forbidden');
    }
    expect(execFileSync('ls', ['-A', outside], { encoding: 'utf8' })).toBe('');
    expect(existsSync(join(server.workspace, 'x'))).toBe(false);
    // A symlink that stays inside is unpacked as a symlink.
    const inside = await upload(session.id, tarOf([{ path: 'docs/readme', body: 'hi' }, { path: 'readme-link', type: 'SymbolicLink', linkpath: 'docs/readme' }]));
    expect(inside.status).toBe(201);
    expect(readFileSync(join(session.cwd, 'readme-link'), 'utf8')).toBe('hi');
    // Garbage is a 400, not a 500.
    const garbage = await upload(session.id, Buffer.from('this is not a tar archive at all'.repeat(40)));
    expect(garbage.status).toBe(400);
  });

  it('answers 413 past the upload bounds, with the rest of the body read', async () => {
    server = await startServer({ ASM_MAX_UPLOAD_BYTES: '1024', ASM_MAX_UPLOAD_FILES: '3' });
    const session = await newSession();
    // Raw fetch: the file is the raw body, which the client's types do not take.
    const big = await fetch(`${server.url}/v1/sessions/${session.id}/files/big.bin`, { method: 'PUT', body: Buffer.alloc(256 * 1024, 1) });
    expect(big.status).toBe(413);
    expect(((await big.json()) as any).error.kind).toBe('payload_too_large');
    const many = await upload(session.id, tarOf(['a', 'b', 'c', 'd'].map((path) => ({ path, body: path }))));
    expect(many.status).toBe(413);
    const fits = await upload(session.id, tarOf(['a', 'b', 'c'].map((path) => ({ path, body: path }))));
    expect(fits.status).toBe(201);
  });
});

describe('git workspaces', () => {
  function repository(): { url: string; head: string } {
    const dir = scratchDir('asm-origin-');
    const git = (...args: string[]) => execFileSync('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { encoding: 'utf8' }).trim();
    git('init', '--quiet', '--initial-branch=main');
    mkdirSync(join(dir, 'lib'));
    writeFileSync(join(dir, 'lib', 'code.js'), 'export const v = 1;\n');
    git('add', '.');
    git('commit', '--quiet', '-m', 'first');
    const first = git('rev-parse', 'HEAD');
    writeFileSync(join(dir, 'README.md'), '# later\n');
    git('add', '.');
    git('commit', '--quiet', '-m', 'second');
    return { url: `file://${dir}`, head: first };
  }

  it('clones the repository at a ref, keeps its .git out of the diff and untouched', async () => {
    server = await startServer({ ASM_WORKSPACE_GIT_SCHEMES: 'https,file' });
    const origin = repository();
    const atFirst = await newSession({ workspace: { git: { url: origin.url, ref: origin.head } } });
    expect(existsSync(join(atFirst.cwd, 'README.md'))).toBe(false);
    const latest = await newSession({ workspace: { git: { url: origin.url } } });
    expect(readFileSync(join(latest.cwd, 'README.md'), 'utf8')).toBe('# later\n');

    const done = await run(latest.id, "sed -i 's/1/2/' lib/code.js");
    const diff = (await reply(server.client.GET('/v1/runs/{id}/diff', { params: { path: { id: done.id } } }))).body.summary;
    expect(diff.files).toEqual([{ path: 'lib/code.js', status: 'modified', additions: 1, deletions: 1, binary: false }]);
    // The user's own repository sees the change as its own uncommitted work: its index was not touched.
    // (safe.directory: the sandbox handed the folder to the CLI's account.)
    expect(execFileSync('git', ['-c', 'safe.directory=*', '-C', latest.cwd, 'status', '--porcelain'], { encoding: 'utf8' })).toBe(' M lib/code.js\n');
  });

  it('refuses schemes the operator did not allow, and a ref that does not exist', async () => {
    server = await startServer();
    const origin = repository();
    const refused = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', workspace: { git: { url: origin.url } } } }));
    expect(refused.status).toBe(403);
    expect(refused.body.error.details.field).toBe('workspace.git.url');
    for (const url of ['ext::sh -c touch% /tmp/pwned', '-u/tmp/x', 'host:path/repo.git']) {
      expect((await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', workspace: { git: { url } } } }))).status).toBe(400);
    }
    await server.close();
    server = await startServer({ ASM_WORKSPACE_GIT_SCHEMES: 'file' });
    const missing = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', workspace: { git: { url: origin.url, ref: 'no-such-branch' } } } }));
    expect(missing.status).toBe(400);
    expect(missing.body.error.details.field).toBe('workspace.git');
    expect(execFileSync('ls', ['-A', server.workspace], { encoding: 'utf8' }).split('\n').filter((n) => n.startsWith('ses_'))).toEqual([]);
    const both = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', cwd: '.', workspace: { archive_upload: true } } }));
    expect(both.status).toBe(400);
  });
});
