/**
 * The environment a CLI runs with is an allowlist, never a copy of the service's own environment:
 * the service holds secrets (ASM_API_KEYS, other providers' keys, database URLs) that must not reach
 * an agent, which can print its environment as easily as anything else.
 *
 * A CLI gets exactly:
 * - the base set below, which any program expects:
 *     PATH        to find node, git and the tools the agent runs
 *     HOME        where CLIs keep their login and settings (~/.claude, ~/.codex)
 *     LANG LC_ALL the text encoding of tool output
 *     TZ          so timestamps the agent sees match the host's
 *     TMPDIR      scratch space
 *     TERM        some tools refuse to start without it
 * - the provider's own names (ProviderDefinition.env: its auth and endpoint variables),
 * - the operator's extra names (config.passEnv, from ASM_PASS_ENV),
 * - the provider's fixed variables (ProviderDefinition.setEnv), whatever the service's environment holds.
 * A name that is not set in the service's environment is simply absent.
 *
 * It lives with the providers because it is built from a provider's declared names, for every way a
 * provider's CLI is started: a run (sessions/service.ts builds the run's env) and the version probe
 * (registry.ts). Backends only receive the result, as BackendRunSpec.env.
 */
export const BASE_ENV_NAMES: readonly string[] = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'TERM'];

export function buildCliEnv(
  source: Readonly<Record<string, string | undefined>>,
  providerEnv: readonly string[],
  passEnv: readonly string[],
  fixed: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of [...BASE_ENV_NAMES, ...providerEnv, ...passEnv]) {
    const value = source[name];
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...fixed };
}
