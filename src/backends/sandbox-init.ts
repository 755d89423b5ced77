import { accessSync, constants } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Account } from './sandbox-dirs.js';
import type { Mount } from './sandbox-mounts.js';

/**
 * The bwrap sandbox's command line inside the namespace, up to the CLI (bwrap.ts has the whole line):
 * its init, the drop to ASM_SANDBOX_USER, the egress relay where the network is restricted, and the
 * CLI's signals back at their defaults. Either the init program (native/sandbox-init.c, one program
 * for all of it) or, where it is not built or ASM_SANDBOX_INIT=shell, the shell's chain of `sh`,
 * `setpriv` and `env`: the same sandbox either way (test/backends/sandbox-init.test.ts runs both).
 *
 * The init stays bwrap's user and drops to ASM_SANDBOX_USER only for the CLI: bwrap's
 * --die-with-parent then reaches the init when the service dies (SIGKILLed), and the kernel empties
 * the namespace with it. A death signal obeys the kill permission, which bwrap (no capabilities
 * left) has only over its own user: an init of ASM_SANDBOX_USER outlived a killed service, CLI and
 * daemons included (issue 13, finding 3; test/faults/killed-worker.test.ts). The init only waits;
 * the CLI, as another user without capabilities, cannot reach it.
 */

/** Signals the service sends a CLI's process group (providers' interrupts, the stop escalation): ignored by bwrap and the init, at their defaults for the CLI. */
export const GROUP_SIGNALS = 'INT,TERM,HUP,QUIT';

/** Where a sandbox shows the init program, read-only. */
const INIT_PROGRAM = '/run/asm-init';

/** The init program as `npm ci` builds it (scripts/build-native.mjs). */
export const BUILT_INIT = fileURLToPath(new URL('../../native/build/Release/asm_sandbox_init', import.meta.url));

/** The programs the command line is made of, found on the service's PATH (bwrap.ts). */
export interface InitTools {
  env: string;
  sh: string;
  /** Only where the service is root, and the init program is not used. */
  setpriv?: string;
  /** The init program, where ASM_SANDBOX_INIT=native and it is built. */
  init?: string;
}

/** The init program at `path` (BUILT_INIT), or undefined, with a warning, where it is not built: the shell's chain starts the CLIs then. */
export function initProgramAt(path: string, log: Logger): string | undefined {
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    log.warn({ path }, 'native/sandbox-init.c is not built (npm ci builds it where a C compiler is found): the sandbox starts each CLI through sh, setpriv and env, a few milliseconds more a start');
    return undefined;
  }
}

/** The command line after bwrap's `--`, up to the CLI; `account`: where the service is root; `relay`: the egress relay's command, or []. */
export function initCommand(tools: InitTools, account: Pick<Account, 'uid' | 'gid'> | null, relay: string[]): string[] {
  // The shell exports PWD, which is not the CLI's to have; env gives the CLI its signals back.
  const defaultSignals = [tools.env, '-u', 'PWD', `--default-signal=${GROUP_SIGNALS}`];
  if (tools.init) {
    return [
      INIT_PROGRAM,
      ...(account ? [`--user=${account.uid}:${account.gid}`] : []),
      // The relay must outlive the group's signals: it keeps them ignored, and env resets them for the CLI.
      ...(relay.length ? ['--keep-signals', '--', ...relay, ...defaultSignals] : ['--']),
    ];
  }
  return [
    // The CLI runs in a subshell, so the shell stays as the init and the CLI is its child; the
    // shell's own stderr is dropped ("Terminated" when the CLI is stopped), the CLI's is the real one.
    tools.sh, '-c', 'exec 3>&2 2>/dev/null; (exec "$@" 2>&3 3>&-); exit $?', 'sh',
    ...(account ? [tools.setpriv!, `--reuid=${account.uid}`, `--regid=${account.gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--'] : []),
    ...relay,
    ...defaultSignals,
  ];
}

/** What the command line needs mounted: the init program, where it is used. */
export function initMounts(tools: InitTools): Mount[] {
  return tools.init ? [{ path: INIT_PROGRAM, source: tools.init, writable: false }] : [];
}
