/**
 * The init of the bwrap sandbox, both ways it is built (src/backends/bwrap.ts): the init program
 * (native/sandbox-init.c, ASM_SANDBOX_INIT=native) and the chain of `sh`, `setpriv` and `env`
 * (ASM_SANDBOX_INIT=shell). The CLI must find the same sandbox either way: its account and no
 * capability, its signals back at their defaults, no PWD, its exit status passed out (128 + N for a
 * signal), an init that outlives the group's signals, and a namespace that ends with the CLI.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { initProgramAt } from '../../src/backends/sandbox-init.js';
import { spawnChild } from '../../src/backends/spawn-child.js';
import { loadConfig } from '../../src/config.js';
import type { CliCommand, Sandbox } from '../../src/backends/types.js';
import { scratchDir, testSandbox } from '../helpers/sandbox.js';
import { waitFor } from '../helpers/wait.js';

const PATH = '/usr/bin:/bin';
const root = process.getuid?.() === 0;

interface Ended {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `command` in the session's sandbox as the core lane starts a CLI (its own process group); `started` gets the group. */
async function inSandbox(sandbox: Sandbox, session: string, command: string, args: string[], started?: (group: number) => void): Promise<Ended> {
  const cli: CliCommand = { command, args, cwd: scratchDir('sandbox-init-'), env: { PATH }, stdin: 'closed' };
  const wrapped = await sandbox.wrap(session, cli);
  return new Promise((resolve, reject) => {
    const child = spawnChild(wrapped.command, wrapped.args, { cwd: wrapped.cwd, env: wrapped.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk) => {
      stdout += chunk;
      if (stdout.includes('ready\n')) started?.(child.pid!);
    });
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe.each(['native', 'shell'])('the sandbox init, ASM_SANDBOX_INIT=%s', (init) => {
  let sandbox: Sandbox;
  const session = `ses_sandbox_init_${init}`;
  afterAll(async () => {
    await sandbox.release(session);
    await sandbox.close();
  });

  it('gives the CLI its account, no capability, no_new_privs, its signals at their defaults and no PWD', async () => {
    sandbox = await testSandbox({ ASM_SANDBOX_INIT: init });
    // The namespace's PID 1 is the init asked for (native/sandbox-init.c is built by npm ci here).
    const pid1 = await inSandbox(sandbox, session, 'cat', ['/proc/1/cmdline']);
    expect(pid1.stdout.split('\0')[0]).toMatch(init === 'native' ? /^\/run\/asm-init$/ : /\/sh$/);
    // grep reads its own status: what the exec gave the CLI (a shell blocks signals while it waits for a child).
    const status = await inSandbox(sandbox, session, 'grep', ['-E', '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|SigIgn|SigBlk):', '/proc/self/status']);
    expect(status.code, status.stderr).toBe(0);
    const fields = Object.fromEntries(status.stdout.trim().split('\n').map((line) => line.split(/:\s*/, 2) as [string, string]));
    const zero = '0000000000000000';
    expect(fields).toMatchObject({ CapInh: zero, CapPrm: zero, CapEff: zero, CapAmb: zero, NoNewPrivs: '1', SigIgn: zero, SigBlk: zero });
    if (root) {
      // nobody, and no group but its own.
      expect(fields.Uid!.split(/\s+/)).toEqual(['65534', '65534', '65534', '65534']);
      expect(fields.Gid!.split(/\s+/)).toEqual(['65534', '65534', '65534', '65534']);
      expect(fields.Groups ?? '').toBe('');
      expect(fields.CapBnd).toBe(zero);
    }
    const env = await inSandbox(sandbox, session, 'env', []);
    expect(env.stdout.split('\n').filter((line) => line.startsWith('PWD='))).toEqual([]);
    expect(env.stdout).toContain(`PATH=${PATH}\n`);
  });

  it('passes the CLI\'s exit status out, and 128 + N for a CLI the group\'s signal N killed', async () => {
    expect((await inSandbox(sandbox, session, 'sh', ['-c', 'exit 5'])).code).toBe(5);
    const killed = await inSandbox(sandbox, session, 'sh', ['-c', 'echo ready; exec sleep 60'], (group) => process.kill(-group, 'SIGTERM'));
    expect(killed.code).toBe(128 + 15);
  });

  it('outlives the signals the service sends the group: a CLI that handles one ends with its own status', async () => {
    const handled = await inSandbox(sandbox, session, 'sh', ['-c', 'trap "echo handled; exit 7" INT; echo ready; while :; do sleep 0.05; done'], (group) => process.kill(-group, 'SIGINT'));
    expect(handled).toMatchObject({ code: 7 });
    expect(handled.stdout).toContain('handled\n');
  });

  it('ends the namespace with the CLI: what the CLI left running is gone', async () => {
    const marker = `${Math.floor(Math.random() * 1e6) + 1000}.5`;
    const left = await inSandbox(sandbox, session, 'sh', ['-c', `sleep ${marker} & echo started`]);
    expect(left).toMatchObject({ code: 0, stdout: 'started\n' });
    await waitFor(() => !execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).includes(`sleep ${marker}`), 'the left-over sleep to be gone');
  });
});

describe('ASM_SANDBOX_INIT', () => {
  it('is native by default and refuses anything but native or shell, naming itself', () => {
    expect(loadConfig({}).sandbox.init).toBe('native');
    expect(() => loadConfig({ ASM_SANDBOX_INIT: 'tini' })).toThrow('ASM_SANDBOX_INIT: expected native or shell, got "tini"');
  });

  it('falls back to the shell\'s chain, with a warning that says so, where the init program is not built', () => {
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const built = fileURLToPath(new URL('../../native/build/Release/asm_sandbox_init', import.meta.url));
    expect(initProgramAt(built, log)).toBe(built);
    expect(lines).toEqual([]);
    const missing = join(scratchDir('sandbox-init-missing-'), 'asm_sandbox_init');
    expect(initProgramAt(missing, log)).toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, path: missing, msg: expect.stringContaining('through sh, setpriv and env') });
  });
});
