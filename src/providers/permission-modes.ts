import { AsmError } from '../errors/kinds.js';

/**
 * The normalized permission modes every provider is asked in, and how a request's permission fields
 * become one provider's native mode. Each provider maps the normalized modes to its own in one table
 * (ProviderDefinition.permissionModes, in its own file); this file only knows the vocabulary. Not a
 * provider (the registry skips it).
 *
 *   default  the provider's normal posture: it asks (or refuses) before anything risky
 *   auto     edits (and, where the CLI says so, sandboxed commands) go ahead; escalations still ask
 *   bypass   nothing asks, nothing is refused
 *   plan     read and plan only; nothing is changed
 */

export const PERMISSION_MODES = ['default', 'auto', 'bypass', 'plan'] as const;
export type PermissionMode = (typeof PERMISSION_MODES)[number];

/** A provider's table: normalized mode → its native mode. A mode it lacks is absent. */
export type PermissionModeTable = Partial<Record<PermissionMode, string>>;

export const APPROVAL_POSTURES = ['manual', 'auto', 'none'] as const;
export type ApprovalPosture = (typeof APPROVAL_POSTURES)[number];

/** The names callers may use for each mode, besides the mode's own. */
const ALIASES: Record<string, PermissionMode> = {
  accept_edits: 'auto',
  delegate: 'auto',
  dont_ask: 'auto',
  auto_edit: 'auto',
  bypass_permissions: 'bypass',
  yolo: 'bypass',
  force: 'bypass',
  dangerously_allow_all: 'bypass',
  dangerously_skip_permissions: 'bypass',
};

/**
 * A spelling's key: case-insensitive, and `-`, `_` and camelCase are one word, so `acceptEdits`,
 * `accept-edits` and `ACCEPT_EDITS` are all accept_edits.
 */
function spellingKey(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

const BY_SPELLING = new Map<string, PermissionMode>([
  ...PERMISSION_MODES.map((mode) => [spellingKey(mode), mode] as const),
  ...Object.entries(ALIASES).map(([alias, mode]) => [spellingKey(alias), mode] as const),
]);

/** Every accepted spelling, for error messages and docs. */
export const PERMISSION_MODE_NAMES: readonly string[] = [...PERMISSION_MODES, ...Object.keys(ALIASES)];

/** The normalized mode a name stands for, or undefined when it is none of them. */
export function normalizePermissionMode(name: string): PermissionMode | undefined {
  return BY_SPELLING.get(spellingKey(name));
}

/** The permission fields of one layer of a request (a session, or a run that overrides its session). */
export interface PermissionRequest {
  permission_mode?: string;
  provider_permission_mode?: string;
  approval_posture?: ApprovalPosture;
}

export interface ResolvedPermission {
  /** The normalized mode, or null for a native mode that none of them maps to (claude's dontAsk). */
  permission_mode: PermissionMode | null;
  /** What the CLI is given. */
  provider_permission_mode: string;
  approval_posture: ApprovalPosture | null;
}

/** approval_posture, when the layer names no mode: manual asks (default), auto lets edits through (auto). */
const POSTURE_MODES: Record<Exclude<ApprovalPosture, 'none'>, PermissionMode> = { manual: 'default', auto: 'auto' };

interface ModeProvider {
  name: string;
  permissionModes: PermissionModeTable;
  nativePermissionModes: readonly string[];
}

function refuse(field: string, message: string, details: Record<string, unknown>): AsmError {
  return new AsmError('config_invalid', `${field}: ${message}`, { details: { field, ...details } });
}

/**
 * One layer's permission fields as the provider's mode, or undefined when the layer gives none (the
 * layer below applies). An explicit permission_mode wins over approval_posture; provider_permission_mode,
 * the escape hatch to a native mode, must agree with permission_mode when both are given. Every refusal
 * is config_invalid naming the field, the provider and the mode.
 */
export function resolvePermission(provider: ModeProvider, request: PermissionRequest): ResolvedPermission | undefined {
  const posture = request.approval_posture ?? null;
  if (posture === 'none') {
    throw refuse('approval_posture', `none (nobody decides) is not supported; use manual, auto, or permission_mode bypass`, { provider: provider.name, approval_posture: posture });
  }
  let mode: PermissionMode | undefined;
  if (request.permission_mode !== undefined) {
    mode = normalizePermissionMode(request.permission_mode);
    if (!mode) {
      const hint = provider.nativePermissionModes.includes(request.permission_mode) ? `; ${provider.name}'s own modes go in provider_permission_mode` : '';
      throw refuse('permission_mode', `"${request.permission_mode}" is not a permission mode; use one of ${PERMISSION_MODE_NAMES.join(', ')}${hint}`, {
        provider: provider.name,
        mode: request.permission_mode,
      });
    }
  } else if (posture !== null) {
    mode = POSTURE_MODES[posture];
  }
  const native = request.provider_permission_mode;
  if (native !== undefined) {
    if (!provider.nativePermissionModes.includes(native)) {
      throw refuse('provider_permission_mode', `${provider.name} has no mode "${native}"; its modes are ${provider.nativePermissionModes.join(', ')}`, {
        provider: provider.name,
        mode: native,
      });
    }
    const normalized = mode ?? normalizedOf(provider.permissionModes, native);
    if (mode !== undefined && provider.permissionModes[mode] !== native) {
      throw refuse('provider_permission_mode', `"${native}" is not what permission_mode ${mode} means for ${provider.name}; give one of the two`, {
        provider: provider.name,
        mode: native,
      });
    }
    return { permission_mode: normalized, provider_permission_mode: native, approval_posture: posture };
  }
  if (mode === undefined) return undefined;
  const mapped = provider.permissionModes[mode];
  if (mapped === undefined) {
    const field = request.permission_mode !== undefined ? 'permission_mode' : 'approval_posture';
    const has = Object.keys(provider.permissionModes).join(', ');
    throw refuse(field, `${provider.name} has no permission mode ${mode} (it has ${has})`, { provider: provider.name, mode });
  }
  return { permission_mode: mode, provider_permission_mode: mapped, approval_posture: posture };
}

/** A session with no permission fields: the provider's default. */
export function defaultPermission(provider: ModeProvider): ResolvedPermission {
  return { permission_mode: 'default', provider_permission_mode: provider.permissionModes.default!, approval_posture: null };
}

function normalizedOf(table: PermissionModeTable, native: string): PermissionMode | null {
  return PERMISSION_MODES.find((mode) => table[mode] === native) ?? null;
}
