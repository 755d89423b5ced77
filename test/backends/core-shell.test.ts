import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildCliEnv } from '../../src/providers/env.js';
import shell from '../../src/providers/shell.js';
import type { EventPayload } from '../../src/schemas/events.js';
import {
  groupMembers,
  kinds,
  makeSpec,
  runToEnd,
  startRun,
  terminalError,
  terminalOf,
  waitForMembers,
  type StartedRun,
} from './harness.js';

/** The core backend driving real /bin/sh processes. */

const shellSpec = (prompt: string, overrides = {}) => makeSpec(shell, { prompt, ...overrides });

/**
 * The pid (and process group) of a run, once `name` runs in it. Interrupt tests wait for that: `sh -c`
 * defers a SIGINT that lands before its foreground child has started, until that child ends.
 */
async function pidOnce(waitFor: StartedRun['waitFor'], name: string, count = 1): Promise<number> {
  const { pid } = await waitFor('run_started');
  await waitForMembers(pid!, name, count);
  return pid!;
}

describe('core backend with the shell provider', () => {
  const secret = process.env.ASM_API_KEYS;
  afterEach(() => {
    if (secret === undefined) delete process.env.ASM_API_KEYS;
    else process.env.ASM_API_KEYS = secret;
  });

  it('streams stdout lines as deltas and ends with a result', async () => {
    const events = await runToEnd(shellSpec('echo one; echo two'));
    expect(kinds(events)).toEqual(['run_started', 'assistant_delta', 'assistant_delta', 'result']);
    expect(events[0].payload).toMatchObject({ provider_session_id: null, command: '/bin/sh', args: ['-c', 'echo one; echo two'] });
    expect(events[1].payload).toEqual({ content: 'one\n', index: 0 });
    expect(events[2].payload).toEqual({ content: 'two\n', index: 1 });
    expect(terminalOf(events).payload).toMatchObject({ status: 'completed', stop_reason: 'exit', exit_code: 0, usage: null });
  });

  it('closes stdin: a command reading it sees EOF at once', async () => {
    const events = await runToEnd(shellSpec('cat; echo after-cat'));
    expect(events.filter((e) => e.kind === 'assistant_delta').map((e) => e.payload)).toEqual([
      { content: 'after-cat\n', index: 0 },
    ]);
    expect(terminalOf(events).kind).toBe('result');
  });

  it('passes only the allowlisted environment', async () => {
    process.env.ASM_API_KEYS = 'k_secret_secret_secret:tenant';
    const spec = shellSpec('env', { env: buildCliEnv(process.env, shell.env, []) });
    const output = (await runToEnd(spec)).filter((e) => e.kind === 'assistant_delta').map((e) => (e.payload as { content: string }).content);
    expect(output.join('')).not.toContain('ASM_API_KEYS');
    expect(output.some((line) => line.startsWith('PATH='))).toBe(true);
  });

  it('ends a non-zero exit with provider_error and the stderr tail', async () => {
    const events = await runToEnd(shellSpec('echo oops >&2; exit 3'));
    expect(events.find((e) => e.kind === 'stderr')?.payload).toEqual({ content: 'oops' });
    expect(terminalError(events)).toMatchObject({
      kind: 'provider_error',
      domain: 'tool',
      message: 'command exited with code 3: oops',
      retryable: false,
      exit_code: 3,
    });
  });

  it('ends a command killed by a signal with transport_error', async () => {
    const events = await runToEnd(shellSpec('kill -KILL $$'));
    expect(terminalError(events)).toMatchObject({ kind: 'transport_error', message: 'command was killed by SIGKILL' });
  });

  it('interrupts with SIGINT: user_cancelled, well within the grace', async () => {
    const { run, events, waitFor } = startRun(shellSpec('sleep 30'), { interruptGraceMs: 5_000 });
    await pidOnce(waitFor, 'sleep');
    const interruptedAt = Date.now();
    await run.interrupt('user');
    await run.done;
    expect(Date.now() - interruptedAt).toBeLessThan(2_000);
    expect(terminalError(events)).toEqual({ kind: 'user_cancelled', domain: 'runtime', message: 'Run interrupted', retryable: false });
  });

  it('leaves no process of the group behind, background children included', async () => {
    // A non-interactive sh starts `&` jobs with SIGINT ignored, so the background sleep survives the
    // interrupt and holds our pipes: the backend has to stop the rest of the group.
    const { run, events, waitFor } = startRun(shellSpec('sleep 30 & sleep 30'), { interruptGraceMs: 5_000 });
    const pid = await pidOnce(waitFor, 'sleep', 2);
    await run.interrupt('user');
    await run.done;
    expect(terminalError(events).kind).toBe('user_cancelled');
    expect(groupMembers(pid)).toEqual([]);
  });

  it('stops the group when the interrupt is ignored: SIGTERM after the interrupt grace', async () => {
    const { run, events, waitFor } = startRun(shellSpec("trap '' INT; sleep 30"), { interruptGraceMs: 200 });
    const pid = await pidOnce(waitFor, 'sleep');
    await run.interrupt('shutdown');
    await run.done;
    expect(terminalError(events).kind).toBe('user_cancelled');
    expect(groupMembers(pid)).toEqual([]);
  });

  it('keeps a successful result that arrives after the interrupt', async () => {
    // SIGINT is ignored (and sleep inherits the ignore), so the command finishes normally.
    const { run, events, waitFor } = startRun(shellSpec("trap '' INT; sleep 0.3; echo finished"));
    await pidOnce(waitFor, 'sleep');
    await run.interrupt('user');
    await run.done;
    expect(terminalOf(events).kind).toBe('result');
  });

  it('enforces the deadline: timeout', async () => {
    const events = await runToEnd(shellSpec('sleep 30', { deadlineMs: 300 }));
    expect(terminalError(events)).toMatchObject({ kind: 'timeout', message: 'run exceeded its deadline of 300ms' });
  });

  it('reports a missing binary as cli_not_found, as the only event', async () => {
    const events = await runToEnd(shellSpec('true', { binary: '/nonexistent/asm-no-such-cli' }));
    expect(events).toHaveLength(1);
    expect(terminalError(events)).toMatchObject({ kind: 'cli_not_found', domain: 'provider' });
    expect(terminalError(events).message).toContain('/nonexistent/asm-no-such-cli');
  });

  it('reports a binary that is not executable as cli_not_found', async () => {
    const binary = join(mkdtempSync(join(tmpdir(), 'asm-test-')), 'not-executable');
    writeFileSync(binary, '#!/bin/sh\necho hi\n', { mode: 0o644 });
    const events = await runToEnd(shellSpec('true', { binary }));
    expect(events).toHaveLength(1);
    expect(terminalError(events)).toMatchObject({ kind: 'cli_not_found' });
    expect(terminalError(events).message).toContain('not executable');
  });

  it('reports a missing or unusable working directory as config_invalid', async () => {
    const missing = await runToEnd(shellSpec('true', { cwd: '/nonexistent/asm-no-such-dir' }));
    expect(missing).toHaveLength(1);
    expect(terminalError(missing)).toMatchObject({ kind: 'config_invalid', domain: 'config' });

    const file = join(mkdtempSync(join(tmpdir(), 'asm-test-')), 'a-file');
    writeFileSync(file, '');
    const notDir = await runToEnd(shellSpec('true', { cwd: file }));
    expect(terminalError(notDir)).toMatchObject({ kind: 'config_invalid', message: `working directory is not a directory: ${file}` });
  });

  it('fails a line over the limit with buffer_overflow and stops the process', async () => {
    const startedAt = Date.now();
    const events = await runToEnd(shellSpec("head -c 5000 /dev/zero | tr '\\0' a; echo; sleep 30"), { lineBytes: 1024 });
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    expect(terminalError(events)).toMatchObject({ kind: 'buffer_overflow', domain: 'transport' });
    expect(kinds(events)).toEqual(['run_started', 'error']);
  });

  it('bounds stderr: each line and the tail are cut at stderrBytes', async () => {
    const events = await runToEnd(shellSpec("head -c 3000 /dev/zero | tr '\\0' e >&2; echo >&2; exit 1"), {
      stderrBytes: 1024,
    });
    const stderr = events.filter((e) => e.kind === 'stderr').map((e) => (e.payload as EventPayload<'stderr'>).content);
    expect(stderr).toEqual(['e'.repeat(1024)]);
    expect(terminalError(events).message).toBe(`command exited with code 1: ${'e'.repeat(1023)}`);
  });
});
