import { AsmError } from '../errors/kinds.js';
import type { EventPayload, ProviderEvent } from '../schemas/events.js';
import type { ProcessExit, ProviderDefinition, ProviderProcess, ProviderRunInput } from './types.js';

/**
 * `shell`: the prompt is a command for `/bin/sh -c`, run in the session's working directory. Not an
 * agent: no approvals, no conversation to continue. Useful for scripted steps and for testing ASM.
 *
 * stdout line           → assistant_delta {content: line + "\n", index}
 * exit 0                → result completed (stop_reason "exit")
 * exit N ≠ 0            → error provider_error (domain tool) with the stderr tail
 * killed by a signal    → error transport_error
 * interrupt             → SIGINT to the process group
 */

function createShellProcess(input: ProviderRunInput): ProviderProcess {
  let startedAt = Date.now();
  let index = 0;
  return {
    args: ['-c', input.prompt],
    stdin: 'closed',
    start() {
      startedAt = Date.now();
      return {};
    },
    onLine(line) {
      return { events: [{ kind: 'assistant_delta', payload: { content: `${line}\n`, index: index++ } }] };
    },
    // The shell never asks for an approval, so there is never anything to answer.
    decide: () => ({}),
    interrupt: () => ({ signal: 'SIGINT' }),
    onExit(exit, sawTerminal) {
      return sawTerminal ? [] : [exitEvent(exit, Date.now() - startedAt)];
    },
  };
}

function exitEvent(exit: ProcessExit, durationMs: number): ProviderEvent {
  if (exit.code === 0) {
    const result: EventPayload<'result'> & { exit_code: number } = {
      status: 'completed',
      stop_reason: 'exit',
      usage: null,
      cost_usd: null,
      duration_ms: durationMs,
      exit_code: 0,
    };
    return { kind: 'result', payload: result };
  }
  if (exit.code === null) {
    return { kind: 'error', payload: new AsmError('transport_error', `command was killed by ${exit.signal}`).toBody() };
  }
  const stderr = exit.stderr.trim();
  const message = `command exited with code ${exit.code}${stderr ? `: ${stderr}` : ''}`;
  const error: EventPayload<'error'> & { exit_code: number } = {
    ...new AsmError('provider_error', message, { domain: 'tool', retryable: false }).toBody(),
    exit_code: exit.code,
  };
  return { kind: 'error', payload: error };
}

const shell: ProviderDefinition = {
  name: 'shell',
  displayName: 'Shell (/bin/sh -c)',
  defaultBinary: '/bin/sh',
  install: 'install a POSIX shell (e.g. apt-get install dash)',
  env: [],
  defaultQueue: 'skill',
  capabilities: ['interrupt'],
  // Nothing asks: the command runs as given.
  permissionModes: { default: 'default' },
  nativePermissionModes: ['default'],
  options: {},
  // sh has no version flag. Started bare with stdin at EOF it exits 0 at once, which proves it runs.
  versionArgs: [],
  create: createShellProcess,
};

export default shell;
