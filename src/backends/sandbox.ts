import type { Logger } from 'pino';
import type { SandboxSettings } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import { BwrapSandbox } from './bwrap.js';
import { killTagged, markPids, newRunTag, TAG_VARIABLE } from './process-tag.js';
import type { Sandbox } from './types.js';

/**
 * The sandbox every agent CLI this node starts runs in (README "Sandbox"): its own PID namespace and
 * /proc, the system read-only, the session's workspace read-write, a HOME and TMP of the session's
 * own, the allowlisted environment, and nothing of the service's files, keys or sockets. Where the
 * service runs as root, the CLI runs as ASM_SANDBOX_USER.
 *
 * - `bwrap` (bwrap.ts) is the default; `none` must be configured explicitly and is logged as a warning.
 * - The core lane spawns what `wrap` returns; the SDK lane hands the SDK a `launcher`, an executable
 *   that starts the CLI in the same sandbox, because the SDKs spawn the CLI themselves.
 * - A session's HOME and TMP outlive its runs (the CLIs keep the conversations they continue there)
 *   and go with `release`.
 */

/**
 * ASM_SANDBOX=none: the CLI as it is, as the service's user, seeing what the service sees; tagged, so
 * that its descendants that left its process group are found and killed when it ends (process-tag.ts).
 */
export const NO_SANDBOX: Sandbox = {
  kind: 'none',
  check: async () => undefined,
  wrap: async (_sessionId, cli) => {
    const tag = newRunTag();
    // Before the CLI is spawned: its PID and its descendants' are above the mark.
    const since = markPids();
    return { ...cli, env: { ...cli.env, [TAG_VARIABLE]: tag }, exitOf: (exit) => exit, reap: () => killTagged(tag, since) };
  },
  prepare: () => undefined,
  launcher: async (_sessionId, _runId, cli) => ({ command: cli.command, env: cli.env, dispose: async () => undefined }),
  // Without a sandbox the CLI shares the service's HOME and files: no folder is the session's alone.
  mcpFolder: async () => {
    throw new AsmError('config_invalid', 'mcp_servers: need the sandbox (ASM_SANDBOX=bwrap), which gives each session a private folder for their secrets', {
      details: { field: 'mcp_servers' },
    });
  },
  sessions: async () => [],
  release: async () => undefined,
  close: async () => undefined,
};

/**
 * The sandbox this node's settings ask for, checked once: rejects with an Error that says why it
 * cannot work (and how to run without one). `none` is allowed, with a warning.
 */
export async function createSandbox(settings: SandboxSettings, log: Logger): Promise<Sandbox> {
  if (settings.kind === 'none') {
    log.warn(
      'ASM_SANDBOX=none: agent CLIs run without a sandbox, as the service user, and can read the service\'s processes, environment and files. Use it only where every tenant is trusted.',
    );
    return NO_SANDBOX;
  }
  const sandbox = await BwrapSandbox.create(settings, log);
  try {
    await sandbox.check();
  } catch (err) {
    await sandbox.close();
    throw err;
  }
  log.info({ sandbox: 'bwrap', root: settings.root, user: sandbox.user, network: settings.allowedHosts.length ? 'allowlist' : 'host' }, 'agent CLIs run sandboxed');
  return sandbox;
}
