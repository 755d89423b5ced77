import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { spawnChild } from '../../src/backends/spawn-child.js';
import { runClaudeSdk } from '../../src/providers/claude/sdk.js';
import type { ProviderLineOutput, SdkRunInput, StartedProcess, StartOptions } from '../../src/providers/types.js';

/**
 * The SDK lane's claude is started by the service's spawner (SdkRunInput.spawn) through the Agent
 * SDK's spawnClaudeCodeProcess. A stand-in for the SDK's query() calls it as the SDK does; the
 * process is real.
 */

interface SpawnCall {
  command: string;
  args: string[];
  options: StartOptions;
  child: StartedProcess;
}

/** runClaudeSdk with a module whose query() starts `script` through spawnClaudeCodeProcess, as the SDK would, with `signal`. */
function start(script: string, signal: AbortSignal): { calls: SpawnCall[]; outputs: ProviderLineOutput[]; child: Promise<StartedProcess> } {
  const calls: SpawnCall[] = [];
  const outputs: ProviderLineOutput[] = [];
  let started!: (child: StartedProcess) => void;
  const child = new Promise<StartedProcess>((resolve) => (started = resolve));
  const module = {
    query({ options }: { options: Record<string, any> }) {
      const spawned: StartedProcess = options.spawnClaudeCodeProcess({ command: '/bin/sh', args: ['-c', script], cwd: undefined, env: { PATH: process.env.PATH, UNSET: undefined, ASKED: 'yes' }, signal });
      started(spawned);
      return Object.assign(
        (async function* () {
          await new Promise((resolve) => spawned.once('close', resolve));
        })(),
        { interrupt: async () => undefined },
      );
    },
  };
  const input: SdkRunInput = {
    runId: 'run_1',
    sessionId: 'ses_1',
    prompt: 'hi',
    cwd: tmpdir(),
    env: {},
    binary: '/bin/sh',
    spawn: (command, args, options) => {
      const spawnedChild = spawnChild(command, args, options);
      calls.push({ command, args, options, child: spawnedChild });
      return spawnedChild;
    },
  };
  runClaudeSdk(module, input, (output) => outputs.push(output));
  return { calls, outputs, child };
}

describe('the SDK lane starts claude with the service spawner', () => {
  it('with the command, arguments and environment the SDK gives (unset names left out), in the run cwd, its stderr lines as stderr events', async () => {
    const { calls, outputs, child } = start('echo "asked=$ASKED unset=${UNSET-none}" >&2; echo second >&2', new AbortController().signal);
    await new Promise((resolve) => void child.then((c) => c.once('close', resolve)));
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ command: '/bin/sh', options: { cwd: tmpdir(), env: { PATH: process.env.PATH, ASKED: 'yes' }, stdio: ['pipe', 'pipe', 'pipe'] } });
    expect(Object.keys(calls[0]!.options.env)).not.toContain('UNSET');
    const stderr = outputs.flatMap((output) => output.events ?? []).filter((event) => event.kind === 'stderr').map((event) => event.payload.content);
    expect(stderr).toEqual(['asked=yes unset=none', 'second']);
  });

  it("stops the process with SIGTERM when the SDK's signal aborts, as Node's spawn would", async () => {
    const abort = new AbortController();
    // exec: the process is sleep itself, whatever /bin/sh does with a last command (dash forks it, and the
    // orphan would hold the pipes, and the close, for its 30 s).
    const { child } = start('exec sleep 30', abort.signal);
    const spawned = await child;
    expect(spawned.pid).toBeGreaterThan(0);
    abort.abort();
    await new Promise((resolve) => spawned.once('close', resolve));
    expect(spawned.signalCode).toBe('SIGTERM');
    expect(spawned.killed).toBe(true);
  });
});
