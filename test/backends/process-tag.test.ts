/**
 * The run tag sweep of ASM_SANDBOX=none (src/backends/process-tag.ts) on real processes: the tag
 * found wherever it stands in the environment (first, last, after more than the reader's first
 * buffer), and a process without it left alone; with a mark taken before the run (only the processes
 * created since are read), the CLI and a daemon it left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { killTagged, markPids, newRunTag, TAG_VARIABLE } from '../../src/backends/process-tag.js';
import { waitFor } from '../helpers/wait.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** `sleep` with exactly this environment, in order; resolves once it runs with it. */
async function sleeper(env: Array<[string, string]>): Promise<ChildProcess> {
  const child = spawn('/usr/bin/env', ['-i', ...env.map(([k, v]) => `${k}=${v}`), 'sleep', '600'], { stdio: 'ignore' });
  children.push(child);
  await waitFor(() => readFile(`/proc/${child.pid}/cmdline`, 'utf8').then((c) => c.startsWith('sleep'), () => false), 'sleep to start');
  return child;
}

const exited = (child: ChildProcess) => new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));

describe('killTagged', () => {
  it('kills the processes carrying the tag, first or last in a large environment, and no other', async () => {
    const tag = newRunTag();
    const large = 'x'.repeat(100 * 1024);
    const first = await sleeper([[TAG_VARIABLE, tag], ['BIG', large]]);
    const last = await sleeper([['BIG', large], [TAG_VARIABLE, tag]]);
    const other = await sleeper([['BIG', large], [TAG_VARIABLE, newRunTag()]]);
    // A variable whose value merely ends with the tag is not the tag.
    const suffix = await sleeper([['X', `${TAG_VARIABLE}=${tag}`]]);
    killTagged(tag);
    await Promise.all([exited(first), exited(last)]);
    expect([first.signalCode, last.signalCode]).toEqual(['SIGKILL', 'SIGKILL']);
    expect(other.exitCode ?? other.signalCode).toBeNull();
    expect(suffix.exitCode ?? suffix.signalCode).toBeNull();
  });

  it('with a mark taken before the run: kills what was created since, a setsid double fork included', async () => {
    const tag = newRunTag();
    const since = markPids();
    expect(since).not.toBeNull();
    const child = await sleeper([['BIG', 'x'.repeat(100 * 1024)], [TAG_VARIABLE, tag]]);
    // A daemon: setsid, double fork, its parent gone; found by its PID, which no child handle has.
    const marker = `${600 + Math.floor(Math.random() * 1000)}.5`;
    spawn('/bin/sh', ['-c', `setsid sh -c 'sleep ${marker} & exit 0' &`], { stdio: 'ignore', env: { PATH: process.env.PATH, [TAG_VARIABLE]: tag } });
    const daemon = () => findSleep(marker);
    await waitFor(() => daemon() !== undefined, 'the daemon to start');
    killTagged(tag, since);
    await exited(child);
    expect(child.signalCode).toBe('SIGKILL');
    await waitFor(() => daemon() === undefined, 'the daemon to be killed');
  });
});

/** The PID of the `sleep <marker>` process, if one runs. */
function findSleep(marker: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') === `sleep\0${marker}\0`) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}
