import { chmodSync, mkdtempSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { spawnChild, spawnerInUse, useSpawner, type Spawner } from '../../src/backends/spawn-child.js';
import type { StartedProcess as Child, StartOptions as ChildOptions } from '../../src/providers/types.js';

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
const OPTIONS: ChildOptions = { cwd: tmpdir(), env: ENV, stdio: ['ignore', 'pipe', 'pipe'] };

interface Ended {
  events: string[];
  stdout: string;
  stderr: string;
  exit: [number | null, string | null];
  close: [number | null, string | null];
}

/** Everything a child did, in order, once it closed. */
function ended(child: Child): Promise<Ended> {
  const seen: Ended = { events: [], stdout: '', stderr: '', exit: [null, null], close: [null, null] };
  child.stdout?.on('data', (chunk: Buffer) => (seen.stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (seen.stderr += chunk.toString()));
  child.on('spawn', () => seen.events.push('spawn'));
  child.on('exit', (code, signal) => {
    seen.events.push('exit');
    seen.exit = [code, signal];
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      seen.events.push('close');
      seen.close = [code, signal];
      resolve(seen);
    });
  });
}

/** The error of a child that did not start, once its 'close' (which follows the 'error', as ChildProcess's) came. */
function failure(child: Child): Promise<NodeJS.ErrnoException & { closedWith: unknown[] }> {
  return new Promise((resolve, reject) => {
    child.on('spawn', () => reject(new Error('it started')));
    child.on('error', (error: NodeJS.ErrnoException) => child.on('close', (...closedWith: unknown[]) => resolve(Object.assign(error, { closedWith }))));
  });
}

/**
 * This process's descriptors above 2 that are not close-on-exec: what the test runner itself was
 * given (they reach every child, whichever spawner; the service's own are all close-on-exec).
 */
function inheritedFromOutside(): string[] {
  const CLOEXEC = 0o2000000;
  return readdirSync('/proc/self/fd')
    .filter((fd) => Number(fd) > 2)
    .filter((fd) => {
      try {
        return (Number.parseInt(/^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8) & CLOEXEC) === 0;
      } catch {
        return false; // the listing's own descriptor, closed by now
      }
    })
    .sort((a, b) => Number(a) - Number(b));
}

const sh = (script: string, options: Partial<ChildOptions> = {}) => spawnChild('/bin/sh', ['-c', script], { ...OPTIONS, ...options });

it('starts children with posix_spawn where native/spawn.c is built, as `npm ci` does here', () => {
  expect(spawnerInUse()).toBe('posix_spawn');
});

it('is chosen by ASM_SPAWNER, posix_spawn by default; another value stops start-up naming the variable', () => {
  expect(loadConfig({}).spawner).toBe('posix_spawn');
  expect(loadConfig({ ASM_SPAWNER: 'fork' }).spawner).toBe('fork');
  expect(() => loadConfig({ ASM_SPAWNER: 'vfork' })).toThrow(/^ASM_SPAWNER: expected posix_spawn or fork, got "vfork"/);
});

it('falls back to fork where the module cannot load (here: off the main thread), says why, and still starts children', async () => {
  // The module in a worker thread of its own, loaded through tsx as the tests load the sources.
  const module = pathToFileURL(resolve('src/backends/spawn-child.ts')).href;
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
    import('tsx/esm/api')
      .then(({ register }) => (register(), import(${JSON.stringify(module)})))
      .then((spawning) => {
        const chosen = spawning.useSpawner('posix_spawn');
        const child = spawning.spawnChild('/bin/sh', ['-c', 'echo started'], { cwd: '/', env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.on('data', (chunk) => (output += chunk));
        child.on('close', (code) => parentPort.postMessage({ chosen, inUse: spawning.spawnerInUse(), output, code }));
      }, (err) => parentPort.postMessage({ error: String(err) }));`,
    { eval: true },
  );
  try {
    const reported = await new Promise((resolveReport) => worker.once('message', resolveReport));
    expect(reported).toEqual({
      chosen: { spawner: 'fork', fallback: 'native/spawn.c is not loaded (loaded only on the main thread)' },
      inUse: 'fork',
      output: 'started\n',
      code: 0,
    });
  } finally {
    await worker.terminate();
  }
});

afterAll(() => {
  useSpawner('posix_spawn');
});

// Both spawners behave alike: each case runs with each.
describe.each<Spawner>(['posix_spawn', 'fork'])('spawnChild with %s', (spawner) => {
  it(`is the spawner in use`, () => {
    expect(useSpawner(spawner)).toEqual({ spawner });
    expect(spawnerInUse()).toBe(spawner);
  });

  it('reads stdout and stderr, then reports the exit code, and closes after both pipes', async () => {
    useSpawner(spawner);
    const seen = await ended(sh('echo out; echo err >&2; exit 3'));
    expect(seen).toEqual({ events: ['spawn', 'exit', 'close'], stdout: 'out\n', stderr: 'err\n', exit: [3, null], close: [3, null] });
  });

  it('writes to stdin, whose end the child reads as EOF', async () => {
    useSpawner(spawner);
    const child = spawnChild('cat', [], { ...OPTIONS, stdio: ['pipe', 'pipe', 'pipe'] });
    const done = ended(child);
    child.stdin!.write('one\n');
    child.stdin!.end('two\n');
    expect(await done).toMatchObject({ stdout: 'one\ntwo\n', close: [0, null] });
  });

  it('reports a child killed by a signal by its name, and kill() reaches it', async () => {
    useSpawner(spawner);
    expect((await ended(sh('kill -TERM $$'))).close).toEqual([null, 'SIGTERM']);
    const sleeper = spawnChild('sleep', ['30'], OPTIONS);
    const done = ended(sleeper);
    await new Promise((resolve) => sleeper.once('spawn', resolve));
    expect(sleeper.killed).toBe(false);
    expect(sleeper.kill('SIGKILL')).toBe(true);
    expect(sleeper.killed).toBe(true);
    expect((await done).close).toEqual([null, 'SIGKILL']);
    expect(sleeper.signalCode).toBe('SIGKILL');
    expect(sleeper.kill('SIGKILL')).toBe(false);
  });

  it('finds the command on the PATH of the environment it is given, in the cwd it is given', async () => {
    useSpawner(spawner);
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'asm-spawn-path-')));
    writeFileSync(join(dir, 'asm-test-tool'), '#!/bin/sh\necho "tool in $(pwd) with $ONLY_HERE"\n', { mode: 0o755 });
    const seen = await ended(spawnChild('asm-test-tool', [], { ...OPTIONS, cwd: dir, env: { PATH: `/nonexistent:${dir}:/bin`, ONLY_HERE: 'x' } }));
    expect(seen.stdout).toBe(`tool in ${dir} with x\n`);
  });

  it('fails with ENOENT for a missing command and EACCES for one that is not executable, without starting', async () => {
    useSpawner(spawner);
    const missing = spawnChild('asm-no-such-command', [], { ...OPTIONS, stdio: ['pipe', 'pipe', 'pipe'] });
    expect(await failure(missing)).toMatchObject({ code: 'ENOENT', path: 'asm-no-such-command', closedWith: [-2, null] });
    // Its pipes exist, as a ChildProcess's do, and are closed.
    expect([missing.stdin?.destroyed, missing.stdout?.destroyed, missing.stderr?.destroyed]).toEqual([true, true, true]);
    const dir = mkdtempSync(join(tmpdir(), 'asm-spawn-eacces-'));
    writeFileSync(join(dir, 'asm-not-executable'), '#!/bin/sh\n');
    chmodSync(join(dir, 'asm-not-executable'), 0o644);
    expect(await failure(spawnChild('asm-not-executable', [], { ...OPTIONS, env: { PATH: dir } }))).toMatchObject({ code: 'EACCES' });
    expect(await failure(spawnChild('/bin/true', [], { ...OPTIONS, cwd: join(dir, 'gone') }))).toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a null byte at once, as child_process does', () => {
    useSpawner(spawner);
    expect(() => sh('echo a\0b')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });

  it('starts a detached child as the leader of a new session and process group', async () => {
    useSpawner(spawner);
    // /proc/<pid>/stat: pid (comm) state ppid pgrp session …
    const script = 'read pid comm state ppid pgrp session rest < /proc/$$/stat; echo "$pid $pgrp $session"';
    const [pid, group, session] = (await ended(sh(script, { detached: true }))).stdout.trim().split(' ').map(Number);
    expect(group).toBe(pid);
    expect(session).toBe(pid);
    // Not detached: the child stays in this process's group.
    const [, attachedGroup] = (await ended(sh(script))).stdout.trim().split(' ').map(Number);
    expect(attachedGroup).toBe(Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[2]));
  });

  it('gives the child no blocked or ignored signal (the service ignores SIGPIPE), and of its descriptors only 0, 1 and 2', async () => {
    useSpawner(spawner);
    // Another child's pipes are open meanwhile: they must not reach this one.
    const other = spawnChild('sleep', ['30'], { ...OPTIONS, stdio: ['pipe', 'pipe', 'pipe'] });
    // grep reads its own mask, the one it was spawned with (exec keeps it): a shell's would be read
    // while dash waits for its own child with every signal blocked (its waitproc), now and then.
    const signals = (await ended(spawnChild('grep', ['-E', '^Sig(Blk|Ign)', '/proc/self/status'], OPTIONS))).stdout;
    const descriptors = (await ended(sh('ls /proc/$$/fd'))).stdout;
    other.kill('SIGKILL');
    expect(signals).toMatch(/^SigBlk:\s+0+$/m);
    expect(signals).toMatch(/^SigIgn:\s+0+$/m);
    const fds = descriptors.split('\n').filter((line) => /^\d+$/.test(line)).sort((a, b) => Number(a) - Number(b));
    expect(fds).toEqual(['0', '1', '2', ...inheritedFromOutside()]);
  });
});
