import { describe, expect, it } from 'vitest';
import { AsmError } from '../../src/errors/kinds.js';
import { normalizePermissionMode, resolvePermission } from '../../src/providers/permission-modes.js';
import { loadProviders } from '../../src/providers/registry.js';

/** The normalized vocabulary and one layer's resolution, against the providers' own tables. */

function refusal(run: () => unknown): AsmError {
  try {
    run();
  } catch (err) {
    return err as AsmError;
  }
  throw new Error('expected a refusal');
}

describe('permission modes', () => {
  it('reads every spelling of a mode or alias as one word, case-insensitively', () => {
    for (const spelling of ['accept_edits', 'acceptEdits', 'ACCEPT-EDITS', 'auto_edit', 'dontAsk', 'delegate']) expect(normalizePermissionMode(spelling)).toBe('auto');
    for (const spelling of ['bypass', 'bypassPermissions', 'YOLO', 'force', 'dangerously-allow-all', 'dangerously_skip_permissions']) expect(normalizePermissionMode(spelling)).toBe('bypass');
    expect(normalizePermissionMode('Plan')).toBe('plan');
    for (const spelling of ['full-auto', 'read-only', 'untrusted', 'auto edit', '']) expect(normalizePermissionMode(spelling)).toBeUndefined();
  });

  it('maps through the provider table; a missing mode, a native in the wrong field, a disagreement are config_invalid', async () => {
    const providers = await loadProviders();
    const claude = providers.get('claude')!;
    const codex = providers.get('codex')!;
    expect(resolvePermission(claude, {})).toBeUndefined();
    expect(resolvePermission(codex, { permission_mode: 'auto' })).toEqual({ permission_mode: 'auto', provider_permission_mode: 'full-auto', approval_posture: null });
    expect(resolvePermission(codex, { provider_permission_mode: 'untrusted' })).toEqual({ permission_mode: null, provider_permission_mode: 'untrusted', approval_posture: null });
    expect(resolvePermission(claude, { provider_permission_mode: 'plan', permission_mode: 'plan' })).toMatchObject({ permission_mode: 'plan' });
    expect(resolvePermission(claude, { approval_posture: 'auto' })).toMatchObject({ permission_mode: 'auto', provider_permission_mode: 'acceptEdits' });
    expect(resolvePermission(claude, { approval_posture: 'auto', permission_mode: 'plan' })).toMatchObject({ permission_mode: 'plan', approval_posture: 'auto' });

    const native = refusal(() => resolvePermission(codex, { permission_mode: 'full-auto' }));
    expect(native).toMatchObject({ kind: 'config_invalid', details: { field: 'permission_mode', provider: 'codex', mode: 'full-auto' } });
    expect(native.message).toContain("codex's own modes go in provider_permission_mode");
    expect(refusal(() => resolvePermission(providers.get('amp')!, { approval_posture: 'auto' }))).toMatchObject({ details: { field: 'approval_posture', provider: 'amp', mode: 'auto' } });
    expect(refusal(() => resolvePermission(claude, { permission_mode: 'bypass', provider_permission_mode: 'plan' }))).toMatchObject({ details: { field: 'provider_permission_mode' } });
    expect(refusal(() => resolvePermission(claude, { approval_posture: 'none', permission_mode: 'bypass' }))).toMatchObject({ details: { field: 'approval_posture' } });
  });

  it('every provider has a default, and maps only to native modes it accepts', async () => {
    for (const provider of (await loadProviders()).values()) {
      expect(provider.permissionModes.default, provider.name).toEqual(expect.any(String));
      for (const native of Object.values(provider.permissionModes)) expect(provider.nativePermissionModes, provider.name).toContain(native);
    }
  });
});
