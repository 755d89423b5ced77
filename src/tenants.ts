import { hash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from './config-error.js';
import { AsmError } from './errors/kinds.js';

/**
 * Who may call the service and what each caller may do: the tenant policies (from ASM_TENANTS_FILE
 * and ASM_API_KEYS, parsed by tenants-file.ts) and the directory the app answers from: a tenant's
 * policy by id, and by the SHA-256 digest of a presented key. No plaintext key is kept.
 */

/** `admin`: the global operations too (pausing lanes, every tenant's DLQ, nodes, metrics). */
export type TenantRole = 'admin' | 'tenant';
export const TENANT_ROLES: readonly TenantRole[] = ['admin', 'tenant'];

/** The tenant of the keyless quick start, and of an ASM_API_KEYS key given without a tenant. */
export const DEFAULT_TENANT = 'default';

/** Runs commands on the host: granted only where the operator lists it. */
export const SHELL_PROVIDER = 'shell';

/** Tenant ids name directories (the default workspace root), so they are plain names. */
export const TENANT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface TenantQuotas {
  /** Sessions held at once. */
  sessions: number;
  /** Runs executing at once, across the tenant's sessions. */
  activeRuns: number;
  /** Runs waiting at once, across the tenant's sessions. */
  queuedRuns: number;
  /** WebSocket and SSE streams open at once. */
  connections: number;
  /** Largest `metadata` of a session or run, in bytes of JSON. */
  metadataBytes: number;
  /** Output a run may produce before it is stopped. */
  outputBytesPerRun: number;
  /** Bytes one upload to a session's workspace may write (a file, or an archive's files unpacked). */
  uploadBytes: number;
  /** Entries one archive upload may hold. */
  uploadFiles: number;
}

/** At most `max` requests per `windowMs`. */
export interface TenantRate {
  max: number;
  windowMs: number;
}

export const DEFAULT_QUOTAS: Readonly<TenantQuotas> = Object.freeze({
  sessions: 1_000,
  activeRuns: 20,
  queuedRuns: 200,
  connections: 100,
  metadataBytes: 64 * 1024,
  outputBytesPerRun: 16 * 1024 * 1024,
  uploadBytes: 256 * 1024 * 1024,
  uploadFiles: 10_000,
});

/** ASM_RATE_LIMIT's default: a tenant's requests per window unless its configuration says otherwise. */
export const DEFAULT_RATE: Readonly<TenantRate> = Object.freeze({ max: 6_000, windowMs: 60_000 });

/** What one tenant may do, as the service enforces it. */
export interface TenantPolicy {
  id: string;
  role: TenantRole;
  /** Providers its sessions may use: enabled ones only, and `shell` only where granted. */
  providers: ReadonlySet<string>;
  /** Its sessions' `cwd`s resolve inside this directory. */
  workspaceRoot: string;
  quotas: Readonly<TenantQuotas>;
  rate: Readonly<TenantRate>;
}

/**
 * The providers a tenant is granted: those listed, `default` (every enabled provider but shell), or
 * `every` (shell included: the keyless quick start, where the operator is the only user).
 */
export type ProviderGrant = readonly string[] | 'default' | 'every';

/** A tenant as configured, before the providers and directories are known. */
export interface TenantSpec {
  id: string;
  role: TenantRole;
  /** Lowercase hex SHA-256 digests of its bearer keys. */
  keyDigests: readonly string[];
  providers: ProviderGrant;
  /** null: `<ASM_WORKSPACE_ROOT>/<id>`, created when missing. */
  workspaceRoot: string | null;
  quotas: Readonly<TenantQuotas>;
  rate: Readonly<TenantRate>;
  /** Where it was defined, for start-up errors: the variable, and the file and JSON path within it. */
  source: { variable: string; at: string };
}

export interface TenantsSettings {
  /** No key configured at all: every caller is the one admin tenant, and only loopback binds are allowed. */
  keyless: boolean;
  tenants: readonly TenantSpec[];
}

/** At every authenticated request: the one-shot `hash` (Node 20.12) takes 0.5–0.6 µs here, a Hash object 1.4–1.7 µs. */
export function keyDigest(key: string): string {
  return hash('sha256', key, 'hex');
}

export interface DirectoryContext {
  /** Every provider this build has. */
  known: readonly string[];
  /** ASM_DISABLED_PROVIDERS. */
  disabled: ReadonlySet<string>;
  /** ASM_WORKSPACE_ROOT: the parent of the default tenant roots. */
  workspaceRoot: string;
  /** Create the default tenant roots (not on a worker, which finds runs' directories under its own root). */
  prepareRoots: boolean;
}

/** The tenants of this deployment: policy by id, tenant by key digest. */
export class TenantDirectory {
  private constructor(
    private readonly policies: ReadonlyMap<string, TenantPolicy>,
    private readonly byDigest: ReadonlyMap<string, string>,
    readonly keyless: boolean,
  ) {}

  /** Resolve every spec into a policy; a grant of an unknown provider stops start-up. */
  static async open(settings: TenantsSettings, context: DirectoryContext): Promise<TenantDirectory> {
    const policies = new Map<string, TenantPolicy>();
    const byDigest = new Map<string, string>();
    for (const spec of settings.tenants) {
      policies.set(spec.id, {
        id: spec.id,
        role: spec.role,
        providers: grantedProviders(spec, context),
        workspaceRoot: await workspaceRootOf(spec, context),
        quotas: spec.quotas,
        rate: spec.rate,
      });
      for (const digest of spec.keyDigests) byDigest.set(digest, spec.id);
    }
    return new TenantDirectory(policies, byDigest, settings.keyless);
  }

  /** The policy of an authenticated tenant; a tenant no longer configured may do nothing. */
  get(id: string): TenantPolicy {
    const policy = this.policies.get(id);
    if (!policy) throw new AsmError('forbidden', `tenant ${id} is not configured on this server`);
    return policy;
  }

  /** The tenant a bearer key belongs to: the key is hashed and only its digest looked up. */
  authenticate(key: string): TenantPolicy | undefined {
    const id = this.byDigest.get(keyDigest(key));
    return id === undefined ? undefined : this.policies.get(id);
  }

  /** Refuses a provider the tenant is not granted (403 naming the field `provider`). */
  assertProvider(tenant: string, provider: string): void {
    if (this.get(tenant).providers.has(provider)) return;
    const why =
      provider === SHELL_PROVIDER
        ? 'shell runs commands on the host, so the operator grants it per tenant (ASM_TENANTS_FILE "providers")'
        : 'the operator grants providers per tenant (ASM_TENANTS_FILE "providers")';
    throw new AsmError('forbidden', `provider: ${provider} is not granted to tenant ${tenant}; ${why}`, { details: { field: 'provider' } });
  }
}

function grantedProviders(spec: TenantSpec, { known, disabled }: DirectoryContext): ReadonlySet<string> {
  if (spec.providers === 'every' || spec.providers === 'default') {
    const everyEnabled = known.filter((p) => !disabled.has(p));
    return new Set(spec.providers === 'every' ? everyEnabled : everyEnabled.filter((p) => p !== SHELL_PROVIDER));
  }
  spec.providers.forEach((name, i) => {
    if (!known.includes(name)) {
      throw new ConfigError(spec.source.variable, `${spec.source.at}.providers[${i}]: unknown provider "${name}"; known: ${[...known].sort().join(', ')}`);
    }
  });
  return new Set(spec.providers.filter((p) => !disabled.has(p)));
}

/** An explicit root was checked with the file (tenants-file.ts); a default one is created here. */
async function workspaceRootOf(spec: TenantSpec, { workspaceRoot, prepareRoots }: DirectoryContext): Promise<string> {
  if (spec.workspaceRoot !== null) return spec.workspaceRoot;
  const root = join(workspaceRoot, spec.id);
  if (prepareRoots) {
    await mkdir(root, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
      throw new ConfigError(spec.source.variable, `${spec.source.at}: cannot create the tenant's workspace root ${root} (${err.code ?? err.message})`);
    });
  }
  return root;
}
