import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_ENV_NAMES } from '../../../src/providers/env.js';
import { createClient, type AsmClient } from '../../../src/client/index.js';
import { freePort } from '../../helpers/ports.js';
import { serveProcess, untilServing, type ServeProcess } from '../../helpers/processes.js';
import { reply } from '../../helpers/server.js';
import { tenant, tenantsFile } from '../../helpers/tenants.js';
import { waitFor } from '../../helpers/wait.js';

/**
 * The sandbox, attacked from inside a run. A real `asm serve` holds secrets in its environment (every
 * tenant's API key, a provider key, a database URL with its password) and a keys file on disk;
 * tenant B runs shell commands (the shell provider is command execution: the operator grants it here)
 * and goes looking for them, and for tenant A's work. Every attack gets nothing.
 */

const KEY_A = `key-a-${randomBytes(12).toString('hex')}`;
const KEY_B = `key-b-${randomBytes(12).toString('hex')}`;
const KEY_ADMIN = `key-admin-${randomBytes(12).toString('hex')}`;
const PROVIDER_KEY = `sk-ant-${randomBytes(16).toString('hex')}`;
const DB_PASSWORD = randomBytes(16).toString('hex');
const KEYS_FILE_SECRET = randomBytes(16).toString('hex');
const A_SECRET = `a-secret-${randomBytes(8).toString('hex')}`;
const HIDDEN_SECRET = randomBytes(16).toString('hex');
const SECRETS = [KEY_A, KEY_B, PROVIDER_KEY, DB_PASSWORD, KEYS_FILE_SECRET, HIDDEN_SECRET];

const dirs: string[] = [];
const servers: ServeProcess[] = [];

/** A real server process with this environment; resolves once it serves. */
async function serve(env: Record<string, string>): Promise<{ url: string; process: ServeProcess; workspace: string; sandboxRoot: string }> {
  const base = mkdtempSync(join(tmpdir(), 'asm-hostile-'));
  dirs.push(base);
  const workspace = env.ASM_WORKSPACE_ROOT ?? join(base, 'workspace');
  const sandboxRoot = join(base, 'sandbox');
  mkdirSync(workspace, { recursive: true });
  const port = await freePort();
  const proc = serveProcess({ ASM_PORT: String(port), ASM_WORKSPACE_ROOT: workspace, ASM_SANDBOX_ROOT: sandboxRoot, ...env });
  servers.push(proc);
  const url = `http://127.0.0.1:${port}`;
  await untilServing(url);
  return { url, process: proc, workspace, sandboxRoot };
}

/** The generated client (src/client) on a served process, with this key (null: none, the keyless quick start). */
function as(url: string, key: string | null): AsmClient {
  return createClient({ baseUrl: url, apiKey: key ?? undefined });
}

afterAll(() => {
  for (const server of servers) server.child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('hostile tenant vs the sandbox (bwrap)', () => {
  let server: Awaited<ReturnType<typeof serve>>;
  let keysFile: string;
  /** A file of the service that the operator keeps where a run can see it, and hides (ASM_SANDBOX_HIDE). */
  let hiddenFile: string;
  /** Tenant A's session: its working directory and sandbox HOME, as its own run printed them. */
  let a: { id: string; cwd: string; home: string };
  let b: { id: string };

  /** A shell run of tenant B, to its end: what it printed. */
  async function attack(command: string): Promise<string> {
    const run = await reply(as(server.url, KEY_B).POST('/v1/sessions/{id}/runs', { params: { path: { id: b.id } }, body: { prompt: command, wait: true } }));
    expect(run.status, JSON.stringify(run.body)).toBe(200);
    const events = await reply(as(server.url, KEY_B).GET('/v1/runs/{id}/events', { params: { path: { id: run.body.id }, query: { limit: 1000 } } }));
    return events.body.events
      .filter((e: any) => e.kind === 'assistant_delta' || e.kind === 'stderr')
      .map((e: any) => (e.kind === 'stderr' ? `${e.payload.content}\n` : e.payload.content))
      .join('');
  }

  function expectNoSecret(output: string): void {
    for (const secret of [...SECRETS, A_SECRET]) expect(output).not.toContain(secret);
  }

  beforeAll(async () => {
    const config = mkdtempSync(join(tmpdir(), 'asm-hostile-config-'));
    dirs.push(config);
    keysFile = join(config, 'keys.json');
    writeFileSync(keysFile, JSON.stringify({ keys: [KEYS_FILE_SECRET] }), { mode: 0o600 });
    const workspace = mkdtempSync(join(tmpdir(), 'asm-hostile-ws-'));
    dirs.push(workspace);
    mkdirSync(join(workspace, 'project-a'));
    mkdirSync(join(workspace, 'project-b'));
    hiddenFile = join(workspace, 'project-b', '.deploy-token');
    writeFileSync(hiddenFile, HIDDEN_SECRET);
    const granted = { providers: ['shell'], workspace_root: workspace };
    const operator = tenant('operator', KEY_ADMIN, { role: 'admin' });
    server = await serve({
      ASM_WORKSPACE_ROOT: workspace,
      ASM_SANDBOX_HIDE: hiddenFile,
      // Both tenants may run shell, in one workspace root: what keeps them apart here is the sandbox.
      ASM_TENANTS_FILE: tenantsFile([tenant('tenant-a', KEY_A, granted), tenant('tenant-b', KEY_B, granted), operator]),
      ANTHROPIC_API_KEY: PROVIDER_KEY,
      DATABASE_URL: `postgres://asm:${DB_PASSWORD}@db.internal:5432/asm`,
      ASM_KEYS_FILE: keysFile,
      ASM_SANDBOX_SWEEP_MS: '100',
    });
    const sessionA = await reply(as(server.url, KEY_A).POST('/v1/sessions', { body: { provider: 'shell', cwd: 'project-a' } }));
    expect(sessionA.status, JSON.stringify(sessionA.body)).toBe(201);
    const sessionB = await reply(as(server.url, KEY_B).POST('/v1/sessions', { body: { provider: 'shell', cwd: 'project-b' } }));
    expect(sessionB.status, JSON.stringify(sessionB.body)).toBe(201);
    b = { id: sessionB.body.id };
    const runA = await reply(
      as(server.url, KEY_A).POST('/v1/sessions/{id}/runs', {
        params: { path: { id: sessionA.body.id } },
        body: { prompt: `echo ${A_SECRET} > work.txt; echo ${A_SECRET} > "$HOME/notes.txt"; echo "$HOME"; pwd`, wait: true },
      }),
    );
    expect(runA.body.state, JSON.stringify(runA.body)).toBe('completed');
    const [home, cwd] = runA.body.result.text.trim().split('\n');
    a = { id: sessionA.body.id, cwd, home };
  });

  it('keeps what a run writes in its workspace, and its HOME for the session', () => {
    expect(a.cwd).toBe(join(server.workspace, 'project-a'));
    expect(readFileSync(join(a.cwd, 'work.txt'), 'utf8').trim()).toBe(A_SECRET);
    expect(a.home).toBe(join(server.sandboxRoot, a.id, 'home'));
    expect(readFileSync(join(a.home, 'notes.txt'), 'utf8').trim()).toBe(A_SECRET);
  });

  it('reading every /proc/*/environ finds none of the service\'s secrets', async () => {
    const output = await attack('for f in /proc/[0-9]*/environ /proc/self/environ; do echo "== $f"; tr "\\0" "\\n" < "$f"; done 2>&1');
    expect(output).toContain('== /proc/1/environ');
    expectNoSecret(output);
  });

  it('sees none of the service\'s processes: its /proc holds the run\'s own alone', async () => {
    const output = await attack(`for p in /proc/[0-9]*; do echo "$(basename $p) $(tr "\\0" " " < $p/cmdline)"; done; kill -0 ${server.process.child.pid} && echo "visible-$((6 * 7))"`);
    const lines = output.trim().split('\n');
    expect(Number(lines[0].split(' ')[0])).toBe(1);
    expect(output).not.toContain('main.ts');
    expect(output).not.toContain('visible-42');
    // The init shell, the run's shell and the tools it started (the loop's subshells): a handful, all small pids.
    for (const line of lines.filter((l) => /^\d+ /.test(l))) expect(Number(line.split(' ')[0])).toBeLessThan(50);
  });

  it('runs with the environment allowlist alone, HOME and TMPDIR its session\'s', async () => {
    const output = await attack('tr "\\0" "\\n" < /proc/$$/environ');
    const env = Object.fromEntries(output.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
    for (const name of Object.keys(env)) expect(BASE_ENV_NAMES).toContain(name);
    expect(env.HOME).toBe(join(server.sandboxRoot, b.id, 'home'));
    expect(env.TMPDIR).toBe(join(server.sandboxRoot, b.id, 'tmp'));
    expectNoSecret(output);
  });

  it('cannot read the service\'s files: its keys file, its sockets, its folder, root\'s home', async () => {
    const output = await attack(
      [`cat ${keysFile}`, 'printf "run: %s\\n" "$(ls -A /run | tr "\\n" " ")"', 'ls /var/run /root', `ls ${process.cwd()}`, `cat ${join(process.cwd(), 'package.json')}`, 'cat /etc/shadow', 'ls /etc/ssl/private'].map((c) => `${c} 2>&1`).join('; '),
    );
    expectNoSecret(output);
    expect(output).toMatch(new RegExp(`cat: ${keysFile}: No such file or directory`));
    // The sandbox's /run holds its init program alone (native/sandbox-init.c), none of the host's sockets.
    expect(output).toContain('run: asm-init \n');
    expect(output).toMatch(/ls: cannot access '\/var\/run': No such file or directory/);
    expect(output).toMatch(/ls: cannot access '\/root': No such file or directory/);
    expect(output).not.toContain('"name": "asm"');
  });

  it('finds the files the operator hides (ASM_SANDBOX_HIDE) empty, even in its own workspace', async () => {
    const output = await attack(`cat ${hiddenFile} 2>&1; ls -a`);
    expectNoSecret(output);
    expect(output).toContain('.deploy-token');
  });

  it('cannot read another session\'s workspace or HOME, nor list the workspace root', async () => {
    for (const path of [join(a.cwd, 'work.txt'), join(a.home, 'notes.txt')]) {
      expect(await attack(`cat ${path} 2>&1`)).toBe(`cat: ${path}: No such file or directory\n`);
    }
    // Of the workspace root and the sandbox root it sees its own folders alone.
    expect(await attack(`ls ${server.workspace}`)).toBe('project-b\n');
    expect(await attack(`ls ${server.sandboxRoot}`)).toBe(`${b.id}\n`);
  });

  it('runs as the unprivileged sandbox user where the service is root, with no capabilities', async () => {
    const output = await attack('id -u; grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status');
    if (process.getuid?.() === 0) expect(output).toMatch(/^65534\n/);
    expect(output).toContain('CapEff:\t0000000000000000');
    expect(output).toContain('NoNewPrivs:\t1');
  });

  it('removes a session\'s HOME and TMP once the session is closed', async () => {
    const session = await reply(as(server.url, KEY_A).POST('/v1/sessions', { body: { provider: 'shell', cwd: 'project-a' } }));
    const run = await reply(as(server.url, KEY_A).POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'echo "$HOME"', wait: true } }));
    const home = run.body.result.text.trim();
    expect(existsSync(home)).toBe(true);
    expect((await reply(as(server.url, KEY_A).DELETE('/v1/sessions/{id}', { params: { path: { id: session.body.id } } }))).status).toBe(200);
    await waitFor(() => !existsSync(join(server.sandboxRoot, session.body.id)), 'the closed session\'s sandbox folder to go');
    expect(existsSync(a.home)).toBe(true);
  });

  it('reports the sandbox in /readyz and GET /v1/nodes', async () => {
    const ready = await reply(as(server.url, null).GET('/readyz'));
    expect(ready.body.checks.sandbox).toBe('bwrap');
    const nodes = await reply(as(server.url, KEY_ADMIN).GET('/v1/nodes'));
    expect(nodes.body.nodes.map((n: any) => n.sandbox)).toEqual(['bwrap']);
  });
});

describe('the network of a sandboxed run', () => {
  const servers: Server[] = [];
  let allowedPort: number;
  let forbiddenPort: number;

  beforeAll(async () => {
    for (const body of ['allowed-body', 'forbidden-body']) {
      const server = createServer((_req, res) => res.end(body));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      servers.push(server);
    }
    [allowedPort, forbiddenPort] = servers.map((server) => (server.address() as AddressInfo).port);
  });
  afterAll(() => {
    for (const server of servers) server.close();
  });

  /** A node script run in a shell session of the keyless quick start: what it printed. */
  async function fromInside(url: string, script: string): Promise<string> {
    const session = await reply(as(url, null).POST('/v1/sessions', { body: { provider: 'shell' } }));
    const run = await reply(as(url, null).POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: `node -e '${script}'`, wait: true } }));
    expect(run.body.state, JSON.stringify(run.body.result)).toBe('completed');
    return run.body.result.text;
  }

  /** Prints, for each port: the answer through the proxy ($HTTP_PROXY), a CONNECT through it, and a direct connection. */
  const probe = (ports: number[]) => `
    const http = require("http"), net = require("net");
    const proxy = process.env.HTTP_PROXY ? new URL(process.env.HTTP_PROXY) : null;
    const viaProxy = (port) => new Promise((done) => proxy
      ? http.get({ host: proxy.hostname, port: proxy.port, path: "http://127.0.0.1:" + port + "/" }, (r) => { let b = ""; r.on("data", (d) => (b += d)); r.on("end", () => done("proxy " + r.statusCode + " " + b.trim())); }).on("error", (e) => done("proxy " + e.code))
      : done("proxy none"));
    const tunnel = (port) => new Promise((done) => proxy
      ? http.request({ host: proxy.hostname, port: proxy.port, method: "CONNECT", path: "127.0.0.1:" + port }).on("connect", (r, s) => { s.destroy(); done("connect " + r.statusCode); }).on("error", (e) => done("connect " + e.code)).end()
      : done("connect none"));
    const direct = (port) => new Promise((done) => http.get({ host: "127.0.0.1", port, path: "/" }, (r) => { let b = ""; r.on("data", (d) => (b += d)); r.on("end", () => done("direct " + b)); }).on("error", (e) => done("direct " + e.code)));
    (async () => { for (const port of ${JSON.stringify(ports)}) console.log([await viaProxy(port), await tunnel(port), await direct(port)].join(" | ")); })();`;

  it('reaches the host network by default (the loopback model server of test:agents included)', async () => {
    const server = await serve({});
    expect(await fromInside(server.url, probe([allowedPort]))).toBe('proxy none | connect none | direct allowed-body\n');
  });

  it('reaches only the hosts of ASM_SANDBOX_ALLOWED_HOSTS, through the proxy, when the operator restricts it', async () => {
    const server = await serve({ ASM_SANDBOX_ALLOWED_HOSTS: `127.0.0.1:${allowedPort},api.example.com` });
    const [allowed, forbidden] = (await fromInside(server.url, probe([allowedPort, forbiddenPort]))).trim().split('\n');
    // The sandbox's loopback is its own: the host's servers are not there, only the relay to the proxy.
    expect(allowed).toBe('proxy 200 allowed-body | connect 200 | direct ECONNREFUSED');
    expect(forbidden).toBe(`proxy 403 127.0.0.1:${forbiddenPort} is not in ASM_SANDBOX_ALLOWED_HOSTS | connect 403 | direct ECONNREFUSED`);
  });
});

describe('running without the sandbox, or failing to start one', () => {
  it('ASM_SANDBOX=none is said explicitly, warned at start, and reported', async () => {
    const server = await serve({ ASM_SANDBOX: 'none' });
    const warning = server.process
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line))
      .find((line) => line.level === 40 && /ASM_SANDBOX=none/.test(line.msg));
    expect(warning?.msg).toContain('without a sandbox');
    expect((await reply(as(server.url, null).GET('/readyz'))).body.checks.sandbox).toBe('none');
    expect((await reply(as(server.url, null).GET('/v1/nodes'))).body.nodes[0].sandbox).toBe('none');
  });

  it('refuses to start when the sandbox does not work, saying why and how to run without it', async () => {
    const base = mkdtempSync(join(tmpdir(), 'asm-hostile-nobwrap-'));
    dirs.push(base);
    // A PATH without bubblewrap on it.
    const proc = serveProcess({ ASM_PORT: String(await freePort()), ASM_WORKSPACE_ROOT: base, ASM_SANDBOX_ROOT: join(base, 'sandbox'), PATH: base });
    servers.push(proc);
    expect(await proc.exited).not.toBe(0);
    expect(proc.output()).toContain('ASM_SANDBOX=bwrap needs bwrap');
    expect(proc.output()).toContain('ASM_SANDBOX=none');
  });

  it('refuses an unknown ASM_SANDBOX and a root sandbox user', async () => {
    const unknown = serveProcess({ ASM_PORT: String(await freePort()), ASM_SANDBOX: 'docker' });
    servers.push(unknown);
    expect(await unknown.exited).not.toBe(0);
    expect(unknown.output()).toContain('ASM_SANDBOX: expected bwrap or none, got "docker"');
    if (process.getuid?.() !== 0) return;
    const rootUser = serveProcess({ ASM_PORT: String(await freePort()), ASM_SANDBOX_USER: 'root' });
    servers.push(rootUser);
    expect(await rootUser.exited).not.toBe(0);
    expect(rootUser.output()).toContain('ASM_SANDBOX_USER: "root" is root');
  });
});

describe('the sandbox root', () => {
  it('is made private to the service (0700)', async () => {
    const server = await serve({});
    expect(existsSync(server.sandboxRoot)).toBe(true);
    expect(statSync(server.sandboxRoot).mode & 0o777).toBe(0o700);
  });
});
