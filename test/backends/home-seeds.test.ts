/**
 * What a CLI's first start makes in a new HOME, made once per binary in the real bwrap sandbox
 * (src/backends/home-seeds.ts) and copied into each new session's HOME after the template
 * (src/backends/sandbox-dirs.ts). The CLI is a shell script standing in for a provider's homeSetup:
 * it counts its starts in a scratch file and writes what codex's would (databases, an id).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createSandbox } from '../../src/backends/sandbox.js';
import type { Sandbox, SessionCli } from '../../src/backends/types.js';
import { loadConfig } from '../../src/config.js';
import type { ProviderDefinition } from '../../src/providers/types.js';
import { SANDBOX_ENV, scratchDir } from '../helpers/sandbox.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const PROVIDER = {
  name: 'fake',
  homeSetup: { args: ['setup'], env: { FAKE_QUIET: '1' }, input: ['hello'], keep: /^\.fake\/[^/]+\.db$/, keepKeys: { '.fake/state.json': ['mark', 'absent'] } },
} as unknown as ProviderDefinition;

/** The stand-in CLI: `body` runs after it has counted its start in `count`. */
function writeCli(path: string, count: string, body: string): void {
  const staged = `${path}.new`;
  writeFileSync(staged, `#!/bin/sh\necho start >> ${count}\n[ "$1" = setup ] || exit 9\n${body}\n`, { mode: 0o755 });
  // A new file in its place, as an upgrade leaves it.
  renameSync(staged, path);
}

const SETUP = [
  'mkdir -p "$HOME/.fake"',
  'read line',
  'printf "%s\\n" "$VERSION_MARK$line" > "$HOME/.fake/a.db"',
  'env | cut -d= -f1 | sort > "$HOME/.fake/env.db"',
  'echo setup > "$HOME/.fake/own.db"',
  'echo id-1 > "$HOME/.fake/installation_id"',
  'echo \'{"installId":"id-1","mark":7}\' > "$HOME/.fake/state.json"',
].join('\n');

async function rig(env: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'asm-home-seeds-test-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const template = join(dir, 'template');
  mkdirSync(join(template, '.fake'), { recursive: true });
  writeFileSync(join(template, '.fake', 'own.db'), 'the template\'s\n');
  writeFileSync(join(template, '.fake', 'config'), 'setting\n');
  const bin = scratchDir('home-seeds-');
  const cli = join(bin, 'fake-cli');
  const count = join(bin, 'starts');
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const root = join(dir, 'sandbox');
  const sandbox: Sandbox = await createSandbox(
    loadConfig({ ...SANDBOX_ENV, ASM_SANDBOX_ROOT: root, ASM_SANDBOX_HOME_TEMPLATE: template, ...env }).sandbox,
    log,
  );
  cleanup.push(() => sandbox.close());
  const workspace = scratchDir('home-seeds-work-');
  let sessions = 0;
  return {
    root,
    cli,
    count,
    logs,
    sandbox,
    starts: () => (existsSync(count) ? readFileSync(count, 'utf8').split('\n').filter(Boolean).length : 0),
    /** A new session's first run: prepare, then the wrap that waits for its folders; answers its HOME. */
    async newHome(): Promise<string> {
      const sessionId = `ses_${++sessions}`;
      const session: SessionCli = { provider: PROVIDER, binary: cli };
      sandbox.prepare(sessionId, session);
      await sandbox.wrap(sessionId, { command: cli, args: [], cwd: workspace, env: { PATH: process.env.PATH ?? '' }, stdin: 'closed' });
      return join(root, sessionId, 'home');
    },
    logged: (msg: string) => logs.filter((line) => line.msg === msg),
  };
}

const SEEDED = 'a new session HOME starts with what this CLI made on its first start';
const FAILED = "the CLI's first-start setup failed: each session's HOME starts from the template alone";

describe('home seeds', () => {
  it('makes them once per binary, in a HOME of its own, with PATH and its own variables alone; each new HOME gets what keep and keepKeys name, after the template', async () => {
    const t = await rig();
    process.env.ASM_TEST_SECRET = 'not for the setup';
    cleanup.push(() => void delete process.env.ASM_TEST_SECRET);
    writeCli(t.cli, t.count, SETUP);
    // The first HOME does not wait for the setup: it has the template alone.
    const first = await t.newHome();
    expect(existsSync(join(first, '.fake', 'a.db'))).toBe(false);
    expect(readFileSync(join(first, '.fake', 'config'), 'utf8')).toBe('setting\n');
    await vi.waitFor(() => expect(t.logged(SEEDED)).toHaveLength(1));
    expect(t.logged(SEEDED)[0]).toMatchObject({ provider: 'fake', files: ['.fake/a.db', '.fake/env.db', '.fake/own.db', '.fake/state.json'] });

    const second = await t.newHome();
    // What the setup read on its stdin, into the file it made.
    expect(readFileSync(join(second, '.fake', 'a.db'), 'utf8')).toBe('hello\n');
    // The template's file wins over the setup's; what keep does not name stays out.
    expect(readFileSync(join(second, '.fake', 'own.db'), 'utf8')).toBe('the template\'s\n');
    expect(readFileSync(join(second, '.fake', 'config'), 'utf8')).toBe('setting\n');
    expect(existsSync(join(second, '.fake', 'installation_id'))).toBe(false);
    // Of a keepKeys file, the keys named that it has, and not its id.
    expect(JSON.parse(readFileSync(join(second, '.fake', 'state.json'), 'utf8'))).toEqual({ mark: 7 });
    const names = readFileSync(join(second, '.fake', 'env.db'), 'utf8').split('\n');
    expect(names).toContain('PATH');
    expect(names).toContain('FAKE_QUIET');
    expect(names).not.toContain('ASM_TEST_SECRET');
    if (process.getuid?.() === 0) expect(lstatSync(join(second, '.fake', 'a.db')).uid).toBe(65534);

    await t.newHome();
    // One setup for all three HOMEs; the three runs' wraps started nothing.
    expect(t.starts()).toBe(1);
    // The throwaway session the setup ran in is gone; the seeds are not a session.
    expect((await t.sandbox.sessions()).sort()).toEqual(['ses_1', 'ses_2', 'ses_3']);
  });

  it('makes a new one when the binary is replaced on disk, and removes them at close', async () => {
    const t = await rig();
    writeCli(t.cli, t.count, SETUP);
    await t.newHome();
    await vi.waitFor(() => expect(t.logged(SEEDED)).toHaveLength(1));
    writeCli(t.cli, t.count, `VERSION_MARK="v2: "\n${SETUP}`);
    // The next new HOME sees the other binary: it starts from the template while the new seed is made.
    expect(existsSync(join(await t.newHome(), '.fake', 'a.db'))).toBe(false);
    await vi.waitFor(() => expect(t.logged(SEEDED)).toHaveLength(2));
    expect(readFileSync(join(await t.newHome(), '.fake', 'a.db'), 'utf8')).toBe('v2: hello\n');
    expect(t.starts()).toBe(2);
    const seeds = join(t.root, '.home-seeds', String(process.pid));
    expect(existsSync(seeds)).toBe(true);
    await t.sandbox.close();
    expect(existsSync(seeds)).toBe(false);
  });

  it('logs a setup that fails, with its stderr, and does not try that binary again', async () => {
    const t = await rig();
    writeCli(t.cli, t.count, 'echo "no such thing" >&2\nexit 3');
    await t.newHome();
    await vi.waitFor(() => expect(t.logged(FAILED)).toHaveLength(1));
    expect(t.logged(FAILED)[0]!.err).toContain('setup exited with status 3: no such thing');
    expect(t.logged(FAILED)[0]!.level).toBe(40);
    const home = await t.newHome();
    expect(readFileSync(join(home, '.fake', 'own.db'), 'utf8')).toBe('the template\'s\n');
    // Another binary is tried; by the time its seed is made, a retry of the failed one would have started.
    writeCli(t.cli, t.count, SETUP);
    await t.newHome();
    await vi.waitFor(() => expect(t.logged(SEEDED)).toHaveLength(1));
    expect(t.starts()).toBe(2);
  });

  it('fails a setup whose keepKeys file is not a JSON object, and keeps nothing of it', async () => {
    const t = await rig();
    writeCli(t.cli, t.count, `${SETUP}\necho '["mark"]' > "$HOME/.fake/state.json"`);
    await t.newHome();
    await vi.waitFor(() => expect(t.logged(FAILED)).toHaveLength(1));
    expect(t.logged(FAILED)[0]!.err).toBe('.fake/state.json is not a JSON object');
    expect(existsSync(join(await t.newHome(), '.fake', 'a.db'))).toBe(false);
    expect(t.starts()).toBe(1);
  });

  it('kills a setup that outlasts ASM_SANDBOX_HOME_SETUP_MS', async () => {
    const t = await rig({ ASM_SANDBOX_HOME_SETUP_MS: '300' });
    writeCli(t.cli, t.count, 'exec sleep 30');
    const started = Date.now();
    await t.newHome();
    await vi.waitFor(() => expect(t.logged(FAILED)).toHaveLength(1), { timeout: 5_000 });
    expect(t.logged(FAILED)[0]!.err).toContain('stopped after 300 ms');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('kills a setup still running when the sandbox closes', async () => {
    const t = await rig();
    writeCli(t.cli, t.count, 'exec sleep 30');
    await t.newHome();
    await vi.waitFor(() => expect(t.starts()).toBe(1));
    await t.sandbox.close();
    await vi.waitFor(() => expect(t.logged(FAILED)).toHaveLength(1));
    expect(t.logged(FAILED)[0]!.err).toContain('stopped: the sandbox is closing');
  });

  it('makes none with ASM_SANDBOX_HOME_SETUP_MS=0', async () => {
    const t = await rig({ ASM_SANDBOX_HOME_SETUP_MS: '0' });
    writeCli(t.cli, t.count, SETUP);
    await t.newHome();
    // The wrap of this run waited for its folders, which would have asked for the seed first.
    await t.newHome();
    expect(t.starts()).toBe(0);
    expect(existsSync(join(t.root, '.home-seeds'))).toBe(false);
  });

  it('removes at start what a process that is gone left: its throwaway sessions and its seeds', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'asm-home-seeds-test-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const root = join(dir, 'sandbox');
    const gone = spawnSync('true').pid!;
    const left = [join(root, `asm-${gone}-1`, 'home'), join(root, '.home-seeds', String(gone), 'codex-1')];
    const kept = [join(root, `asm-${process.pid}-99`, 'home'), join(root, 'ses_1', 'home')];
    for (const folder of [...left, ...kept]) mkdirSync(folder, { recursive: true });
    const sandbox = await createSandbox(loadConfig({ ...SANDBOX_ENV, ASM_SANDBOX_ROOT: root }).sandbox, pino({ level: 'silent' }));
    cleanup.push(() => sandbox.close());
    for (const folder of left) expect(existsSync(folder), folder).toBe(false);
    for (const folder of kept) expect(existsSync(folder), folder).toBe(true);
  });
});
