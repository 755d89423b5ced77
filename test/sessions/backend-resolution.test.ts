/**
 * Backend-lane resolution against the case table in src/sessions/lane-resolution.ts, row by row. SDK
 * availability comes from SdkLoader with an injected importer, so both "loadable" and "not loadable"
 * are real outcomes of the loader, not flags.
 */
import { describe, expect, it } from 'vitest';
import { AsmError } from '../../src/errors/kinds.js';
import { SdkLoader, type SdkStatus } from '../../src/backends/sdk-loader.js';
import { needsSdkProbe, resolveBackend, type ExecutionMode, type RequestedBackend } from '../../src/sessions/backend-resolution.js';
import type { ProviderDefinition } from '../../src/providers/types.js';
import claude from '../../src/providers/claude/index.js';
import shell from '../../src/providers/shell.js';
import codex from '../../src/providers/codex/index.js';

const withSdk: ProviderDefinition = { ...claude, sdk: { ...claude.sdk!, package: 'fake-agent-sdk', capabilities: ['streaming', 'session_resume'] } };

async function sdkStatus(loadable: boolean): Promise<SdkStatus> {
  const loader = new SdkLoader(async (specifier) => {
    if (!loadable) throw new Error(`Cannot find package '${specifier}'`);
    return { query: () => undefined };
  });
  return loader.status(withSdk);
}

async function resolve(requested: RequestedBackend, loadable: boolean, mode: ExecutionMode, provider = withSdk, needs: string[] = []) {
  const sdk = needsSdkProbe(provider, requested) ? await sdkStatus(loadable) : null;
  return resolveBackend({ provider, requestedBackend: requested, executionMode: mode, remoteAvailable: true, sdk, needs, node: 'n1', queue: 'prompt' });
}

async function refusal(requested: RequestedBackend, loadable: boolean, mode: ExecutionMode, provider = withSdk, needs: string[] = []): Promise<AsmError> {
  try {
    await resolve(requested, loadable, mode, provider, needs);
  } catch (err) {
    return err as AsmError;
  }
  throw new Error('expected config_invalid');
}

describe('lane resolution (the case table of src/sessions/lane-resolution.ts)', () => {
  it.each([
    // requested, SDK loadable, execution_mode → preferred, lane, lane_reason, fallback
    ['auto', true, 'local', 'sdk', 'sdk', 'sdk_available', null],
    ['auto', false, 'local', 'core', 'core', 'sdk_unavailable', null],
    ['core', true, 'local', 'core', 'core', 'explicit_core', null],
    ['core', false, 'local', 'core', 'core', 'explicit_core', null],
    ['sdk', true, 'local', 'sdk', 'sdk', 'explicit_sdk', null],
    ['auto', true, 'remote_node', 'sdk', 'core', 'sdk_available', 'sdk_remote_unsupported'],
    ['auto', false, 'remote_node', 'core', 'core', 'sdk_unavailable', null],
    ['core', true, 'remote_node', 'core', 'core', 'explicit_core', null],
  ] as const)('%s, SDK loadable %s, %s → preferred %s, lane %s (%s, fallback %s)', async (requested, loadable, mode, preferred, lane, reason, fallback) => {
    const metadata = await resolve(requested, loadable, mode);
    expect(metadata).toMatchObject({
      requested_lane: requested,
      preferred_lane: preferred,
      lane,
      backend: lane,
      execution_mode: mode,
      lane_reason: reason,
      lane_fallback_reason: fallback,
      node: 'n1',
      queue: 'prompt',
    });
    // The executed lane's capabilities and runtime.
    expect(metadata.capabilities).toEqual(lane === 'sdk' ? withSdk.sdk!.capabilities : claude.capabilities);
    expect(metadata.sdk_runtime).toBe(lane === 'sdk' ? 'fake-agent-sdk@unknown' : null);
    expect(metadata.sdk_available).toBe(requested !== 'core' && loadable);
  });

  it.each([
    ['sdk', false, 'local', 'sdk_unavailable'],
    ['sdk', false, 'remote_node', 'sdk_unavailable'],
    ['sdk', true, 'remote_node', 'unsupported_execution_mode'],
  ] as const)('%s, SDK loadable %s, %s → config_invalid (%s), never a silent fallback', async (requested, loadable, mode, reason) => {
    const error = await refusal(requested, loadable, mode);
    expect(error).toBeInstanceOf(AsmError);
    expect(error).toMatchObject({ kind: 'config_invalid', details: { field: 'lane', reason } });
  });

  it('runs auto on core when the session needs a capability the SDK lane lacks, naming it; refuses sdk', async () => {
    const placed = await resolve('auto', true, 'local', withSdk, ['approvals']);
    expect(placed).toMatchObject({
      preferred_lane: 'sdk',
      lane: 'core',
      lane_reason: 'sdk_available',
      lane_fallback_reason: 'sdk_capability_missing',
      missing_capabilities: ['approvals'],
      sdk_available: true,
      sdk_runtime: null,
    });
    // A need the SDK lane meets changes nothing.
    expect(await resolve('auto', true, 'local', withSdk, ['session_resume'])).toMatchObject({ lane: 'sdk', lane_fallback_reason: null, missing_capabilities: [] });
    // Remote runs say why they left the SDK lane first.
    expect(await resolve('auto', true, 'remote_node', withSdk, ['approvals'])).toMatchObject({ lane: 'core', lane_fallback_reason: 'sdk_remote_unsupported' });
    const error = await refusal('sdk', true, 'local', withSdk, ['approvals']);
    expect(error).toMatchObject({ kind: 'config_invalid', details: { field: 'lane', reason: 'sdk_capability_missing', missing_capabilities: ['approvals'] } });
    expect(error.message).toContain('lacks approvals');
  });

  it.each([
    // codex's own declaration (providers/codex/modes.ts), by the native mode a session's mode maps to
    [null, ['approvals']],
    ['read-only', ['approvals']],
    ['full-auto', ['approvals']],
    ['untrusted', ['approvals']],
    ['danger-full-access', []],
    ['read-only-never', []],
  ] as const)('codex with native mode %s needs %j of its lane', (mode, needs) => {
    expect(codex.laneNeeds!(mode)).toEqual(needs);
  });

  it('names the import error when an explicit sdk request cannot load the package', async () => {
    expect((await refusal('sdk', false, 'local')).message).toBe(
      "lane: the sdk lane was requested but fake-agent-sdk cannot be loaded here (Cannot find package 'fake-agent-sdk')",
    );
  });

  it('treats a provider without an SDK lane as SDK-unavailable: auto runs core, sdk is refused', async () => {
    expect(await resolve('auto', true, 'local', shell)).toMatchObject({ lane: 'core', lane_reason: 'sdk_unavailable', sdk_available: false });
    expect((await refusal('sdk', true, 'local', shell)).message).toBe('lane: the sdk lane was requested but shell has no SDK lane');
  });

  it('refuses remote_node where no worker nodes can take it, before looking at lanes', async () => {
    const error = (() => {
      try {
        resolveBackend({ provider: withSdk, requestedBackend: 'core', executionMode: 'remote_node', remoteAvailable: false, sdk: null, needs: [], node: 'n1', queue: 'prompt' });
      } catch (err) {
        return err as AsmError;
      }
      throw new Error('expected config_invalid');
    })();
    expect(error).toMatchObject({ kind: 'config_invalid', details: { field: 'execution_mode', reason: 'distribution_disabled' } });
  });

  it('never probes the SDK for lane core, and imports a package once however often it is asked', async () => {
    let imports = 0;
    const loader = new SdkLoader(async () => {
      imports++;
      return {};
    });
    expect(needsSdkProbe(withSdk, 'core')).toBe(false);
    expect(needsSdkProbe(withSdk, 'auto')).toBe(true);
    expect(needsSdkProbe(shell, 'auto')).toBe(false);
    await Promise.all([loader.status(withSdk), loader.status(withSdk), loader.load(withSdk)]);
    expect(imports).toBe(1);
  });
});
