import { execFile } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_KIND_NAMES } from '../../src/errors/kinds.js';
import { reply, startServer, type TestServer } from '../helpers/server.js';

/**
 * The Python client (clients/python/asm_client.py, standard library only) against a live server:
 * its example runs end to end with python3, through the fake claude of test/fixtures/bin.
 */

const PYTHON_DIR = fileURLToPath(new URL('../../clients/python/', import.meta.url));

/** python3 in clients/python, leaving no __pycache__ behind. */
function python(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return promisify(execFile)('python3', args, { cwd: PYTHON_DIR, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' }, timeout: 60_000 });
}

describe('Python client', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('runs the example: an approval, a resumed SSE stream, an interrupt and typed errors', async () => {
    const { stdout } = await python(['example.py', server.url]);
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toBe('health ok');
    expect(lines[1]).toMatch(/^session \S+ claude$/);
    expect(lines).toContain('approval resolved allow');
    expect(lines).toContain('approval_resolved allow');
    expect(lines.find((l) => l.startsWith('run '))).toMatch(/^run completed events \d+ gap-free True$/);
    expect(lines).toContain('resumed True');
    expect(lines).toContain('interrupted interrupted user_cancelled');
    expect(lines).toContain('error NotFound not_found 404');
    expect(lines).toContain('error Conflict conflict 409');
    expect(lines).toContain('error BadRequest bad_request max_concurrent_runs');
    expect(lines.at(-1)).toBe('closed closed');

    // What the example saw is what the server holds.
    const sessionId = lines[1].split(' ')[1];
    const runs = (await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } } }))).body.runs;
    expect(runs.map((r: any) => r.state).sort()).toEqual(['completed', 'interrupted']);
  });

  it('resumes the SSE stream with Last-Event-ID when the link breaks in the middle: every event once, in order', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'seq 1 40', wait: true } }))).body;
    expect(run.state).toBe('completed');
    const stored = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id } } }))).body.events.map((e: any) => e.seq);
    expect(stored.length).toBeGreaterThan(10);

    // A proxy that cuts the first connection (the first SSE request) after a few KB of its answer.
    const proxy = await cuttingProxy(new URL(server.url).port, 4096);
    try {
      const script = [
        'import json, sys',
        'from asm_client import AsmClient',
        'asm = AsmClient(sys.argv[1])',
        'print(json.dumps([e["seq"] for e in asm.events(sys.argv[2])]))',
      ].join('\n');
      const { stdout } = await python(['-c', script, `http://127.0.0.1:${(proxy.server.address() as { port: number }).port}`, run.id]);
      // The cut stream, the run and its events page (is anything left?), and the resumed stream.
      expect(proxy.connections()).toBe(4);
      expect(JSON.parse(stdout)).toEqual(stored);
    } finally {
      proxy.close();
    }
  });

  it('puts files and a tar into a workspace, reads the run and session diffs, and gets the files back', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', workspace: { archive_upload: true } } }))).body;
    const script = String.raw`
import io, json, sys, tarfile
from asm_client import AsmClient, Forbidden
asm = AsmClient(sys.argv[1])
sid = sys.argv[2]
archive = io.BytesIO()
with tarfile.open(fileobj=archive, mode="w:gz") as tar:
    for name, text in [("a.txt", b"one\ntwo\n"), ("dir/b.txt", b"bee\n")]:
        info = tarfile.TarInfo(name)
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
out = {"upload": asm.upload_archive(sid, archive.getvalue()), "put": asm.put_file(sid, "notes/todo.md", io.BytesIO(b"later\n"))}
run = asm.submit_run(sid, "sed -i 's/two/TWO/' a.txt && echo sea >> dir/b.txt && echo new > c.txt", wait=True)
out["diff"] = [f["path"] for f in asm.run_diff(run["id"])["summary"]["files"]]
out["patch"] = "-two\n+TWO" in asm.session_diff(sid, patch=True)
out["listing"] = [e["name"] for e in asm.list_files(sid)["entries"]]
out["a"] = asm.get_file(sid, "a.txt").decode()
out["tar"] = sorted(m.name for m in tarfile.open(fileobj=io.BytesIO(asm.get_archive(sid, "dir"))).getmembers())
try:
    asm.put_file(sid, "../x", b"evil")
except Forbidden as refused:
    out["refused"] = refused.field
print(json.dumps(out))
`;
    const { stdout } = await python(['-c', script, server.url, session.id]);
    expect(JSON.parse(stdout)).toEqual({
      upload: { files: 2, directories: 0, bytes: 12 },
      put: { files: 1, directories: 0, bytes: 6 },
      diff: ['a.txt', 'c.txt', 'dir/b.txt'],
      patch: true,
      listing: ['a.txt', 'c.txt', 'dir', 'notes'],
      a: 'one\nTWO\n',
      tar: ['.', './b.txt'],
      refused: 'path',
    });
  });

  it('maps every error kind of src/errors/kinds.ts to an exception class', async () => {
    const { stdout } = await python(['-c', 'import asm_client, json; print(json.dumps(sorted(asm_client.ERROR_CLASSES)))']);
    expect(JSON.parse(stdout)).toEqual([...ERROR_KIND_NAMES].sort());
  });
});

/** A TCP proxy to the server that destroys its first connection after `cutAfter` bytes of the answer. */
async function cuttingProxy(port: string, cutAfter: number): Promise<{ server: Server; connections: () => number; close: () => void }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const cut = ++connections === 1;
    const upstream = connect(Number(port), '127.0.0.1');
    sockets.add(client).add(upstream);
    let forwarded = 0;
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => {
      if (cut && forwarded + chunk.length > cutAfter) {
        client.end(chunk.subarray(0, cutAfter - forwarded));
        client.destroySoon();
        upstream.destroy();
        return;
      }
      forwarded += chunk.length;
      client.write(chunk);
    });
    for (const socket of [client, upstream]) socket.on('error', () => {}).on('close', () => (client.destroy(), upstream.destroy()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, connections: () => connections, close: () => (sockets.forEach((s) => s.destroy()), server.close()) };
}
