import { readFileSync, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { ConfigError } from './config-error.js';
import {
  DEFAULT_QUOTAS,
  DEFAULT_TENANT,
  keyDigest,
  TENANT_ID,
  TENANT_ROLES,
  type ProviderGrant,
  type TenantQuotas,
  type TenantRate,
  type TenantRole,
  type TenantSpec,
  type TenantsSettings,
} from './tenants.js';

/**
 * The tenants of a deployment from the environment: ASM_TENANTS_FILE (README "Tenants") and the
 * quick start's ASM_API_KEYS, whose keys are hashed here and dropped. Everything is checked at
 * start-up; an error names the variable, and for the file the file and the JSON path.
 */

type Env = Record<string, string | undefined>;
type Json = Record<string, unknown>;

/** What a tenant gets for what it does not set itself: the file's `defaults`, else the built-in ones. */
interface Defaults {
  providers: ProviderGrant;
  quotas: Readonly<TenantQuotas>;
  rate: Readonly<TenantRate>;
}

/** The built-in defaults, with the request rate of ASM_RATE_LIMIT. */
function builtIn(rate: Readonly<TenantRate>): Defaults {
  return { providers: 'default', quotas: DEFAULT_QUOTAS, rate };
}

/** File field → policy field and its least value. */
const QUOTA_FIELDS: Record<string, [keyof TenantQuotas, number]> = {
  sessions: ['sessions', 1],
  active_runs: ['activeRuns', 1],
  queued_runs: ['queuedRuns', 0],
  connections: ['connections', 1],
  metadata_bytes: ['metadataBytes', 1],
  output_bytes_per_run: ['outputBytesPerRun', 1],
  upload_bytes: ['uploadBytes', 1],
  upload_files: ['uploadFiles', 1],
};
const TENANT_FIELDS = new Set(['id', 'role', 'key_sha256', 'providers', 'workspace_root', 'quotas', 'rate']);
const DEFAULTS_FIELDS = new Set(['providers', 'quotas', 'rate']);
const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

/** `defaultRate`: the request rate of a tenant whose configuration names none (ASM_RATE_LIMIT). */
export function loadTenants(env: Env, workspaceRoot: string, defaultRate: Readonly<TenantRate>): TenantsSettings {
  const base = builtIn(defaultRate);
  const file = env.ASM_TENANTS_FILE ? readTenantsFile(env.ASM_TENANTS_FILE, base) : { defaults: base, tenants: [] };
  const fromKeys = apiKeyTenants(env, file.defaults);
  const tenants = [...file.tenants];
  for (const tenant of fromKeys) {
    const twice = tenants.find((t) => t.id === tenant.id);
    if (twice) throw new ConfigError('ASM_API_KEYS', `tenant "${tenant.id}" is also defined in ${twice.source.at}; define each tenant once`);
    const digest = tenant.keyDigests.find((d) => tenants.some((t) => t.keyDigests.includes(d)));
    if (digest) throw new ConfigError('ASM_API_KEYS', `a key of tenant "${tenant.id}" is also a key in ASM_TENANTS_FILE`);
    tenants.push(tenant);
  }
  if (tenants.length > 0) return { keyless: false, tenants };
  if (env.ASM_TENANTS_FILE) {
    throw new ConfigError('ASM_TENANTS_FILE', `${env.ASM_TENANTS_FILE}: tenants: no tenant is defined (for the keyless quick start, unset ASM_TENANTS_FILE)`);
  }
  // The keyless quick start: the operator is the only user, so the one tenant may do everything.
  const operator: TenantSpec = {
    id: DEFAULT_TENANT,
    role: 'admin',
    keyDigests: [],
    providers: 'every',
    workspaceRoot,
    quotas: DEFAULT_QUOTAS,
    rate: defaultRate,
    source: { variable: 'ASM_WORKSPACE_ROOT', at: 'the keyless default tenant' },
  };
  return { keyless: true, tenants: [operator] };
}

/** `key:tenant,key:tenant`: role `tenant`, the defaults for the rest, and only the keys' digests kept. */
function apiKeyTenants(env: Env, defaults: Defaults): TenantSpec[] {
  const byId = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const entry of (env.ASM_API_KEYS ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const at = entry.lastIndexOf(':');
    const key = at > 0 ? entry.slice(0, at) : entry;
    const id = at > 0 ? entry.slice(at + 1) : DEFAULT_TENANT;
    if (key.length < 16) throw new ConfigError('ASM_API_KEYS', 'each key must be at least 16 characters');
    if (!TENANT_ID.test(id)) throw new ConfigError('ASM_API_KEYS', `tenant "${id}": ${TENANT_ID_RULE}`);
    const digest = keyDigest(key);
    if (seen.has(digest)) throw new ConfigError('ASM_API_KEYS', `a key is given twice (tenant "${id}")`);
    seen.add(digest);
    byId.set(id, [...(byId.get(id) ?? []), digest]);
  }
  return [...byId].map(([id, keyDigests]) => ({
    id,
    role: 'tenant',
    keyDigests,
    workspaceRoot: null,
    ...defaults,
    source: { variable: 'ASM_API_KEYS', at: `tenant "${id}"` },
  }));
}

const TENANT_ID_RULE = 'must be 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit';

/** Reads and checks the whole file; the first problem stops start-up. */
function readTenantsFile(file: string, base: Defaults): { defaults: Defaults; tenants: TenantSpec[] } {
  const fail = (path: string, problem: string): never => {
    throw new ConfigError('ASM_TENANTS_FILE', `${file}: ${path ? `${path}: ` : ''}${problem}`);
  };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return fail('', `cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return fail('', `not valid JSON (${(err as Error).message})`);
  }
  // A list of tenants, or {"defaults": {...}, "tenants": [...]}.
  const shaped = Array.isArray(doc) ? { tenants: doc } : doc;
  const top = object(shaped, '', fail, 'must be a JSON array of tenants, or an object with "tenants" and optional "defaults"');
  const prefix = Array.isArray(doc) ? '' : 'tenants';
  unknownFields(top, new Set(['tenants', 'defaults']), '', fail);
  const defaults = top.defaults === undefined ? base : parseDefaults(object(top.defaults, 'defaults', fail), base, fail);
  if (!Array.isArray(top.tenants)) return fail('tenants', 'must be an array of tenants');
  const tenants: TenantSpec[] = [];
  const definedAt = new Map<string, string>();
  const keyOwner = new Map<string, string>();
  top.tenants.forEach((raw, i) => {
    const path = `${prefix}[${i}]`;
    const tenant = parseTenant(object(raw, path, fail), path, defaults, fail, file);
    const earlier = definedAt.get(tenant.id);
    if (earlier) fail(`${path}.id`, `tenant "${tenant.id}" is already defined at ${earlier}`);
    definedAt.set(tenant.id, path);
    tenant.keyDigests.forEach((digest, k) => {
      const owner = keyOwner.get(digest);
      if (owner) fail(`${path}.key_sha256[${k}]`, `this digest is already a key of tenant "${owner}"`);
      keyOwner.set(digest, tenant.id);
    });
    tenants.push(tenant);
  });
  return { defaults, tenants };
}

type Fail = (path: string, problem: string) => never;

function parseDefaults(raw: Json, base: Defaults, fail: Fail): Defaults {
  unknownFields(raw, DEFAULTS_FIELDS, 'defaults', fail);
  return {
    providers: raw.providers === undefined ? base.providers : providerList(raw.providers, 'defaults.providers', fail),
    quotas: raw.quotas === undefined ? base.quotas : quotas(raw.quotas, 'defaults.quotas', base.quotas, fail),
    rate: raw.rate === undefined ? base.rate : rate(raw.rate, 'defaults.rate', base.rate, fail),
  };
}

function parseTenant(raw: Json, path: string, defaults: Defaults, fail: Fail, file: string): TenantSpec {
  unknownFields(raw, TENANT_FIELDS, path, fail);
  if (typeof raw.id !== 'string' || !TENANT_ID.test(raw.id)) fail(`${path}.id`, TENANT_ID_RULE);
  const role = raw.role ?? 'tenant';
  if (!TENANT_ROLES.includes(role as TenantRole)) fail(`${path}.role`, `must be ${TENANT_ROLES.map((r) => `"${r}"`).join(' or ')}`);
  const keys = raw.key_sha256;
  if (!Array.isArray(keys) || keys.length === 0) fail(`${path}.key_sha256`, 'must be a non-empty array of SHA-256 digests (64 hex digits) of the tenant\'s keys');
  (keys as unknown[]).forEach((key, k) => {
    if (typeof key !== 'string' || !SHA256_HEX.test(key)) fail(`${path}.key_sha256[${k}]`, 'must be a SHA-256 digest in hex (64 digits), never the key itself');
  });
  return {
    id: raw.id as string,
    role: role as TenantRole,
    keyDigests: (keys as string[]).map((k) => k.toLowerCase()),
    providers: raw.providers === undefined ? defaults.providers : providerList(raw.providers, `${path}.providers`, fail),
    workspaceRoot: raw.workspace_root === undefined ? null : directory(raw.workspace_root, `${path}.workspace_root`, fail),
    quotas: raw.quotas === undefined ? defaults.quotas : quotas(raw.quotas, `${path}.quotas`, defaults.quotas, fail),
    rate: raw.rate === undefined ? defaults.rate : rate(raw.rate, `${path}.rate`, defaults.rate, fail),
    source: { variable: 'ASM_TENANTS_FILE', at: `${file}: ${path}` },
  };
}

/** Names only: whether each exists is checked once the providers are loaded (TenantDirectory.open). */
function providerList(raw: unknown, path: string, fail: Fail): string[] {
  if (!Array.isArray(raw)) return fail(path, 'must be an array of provider names');
  raw.forEach((name, i) => {
    if (typeof name !== 'string' || name === '') fail(`${path}[${i}]`, 'must be a provider name');
    if (raw.indexOf(name) < i) fail(`${path}[${i}]`, `"${name}" is listed twice`);
  });
  return raw as string[];
}

function directory(raw: unknown, path: string, fail: Fail): string {
  if (typeof raw !== 'string' || !isAbsolute(raw)) return fail(path, 'must be an absolute path');
  const isDirectory = (() => {
    try {
      return statSync(raw).isDirectory();
    } catch {
      return false;
    }
  })();
  if (!isDirectory) fail(path, `${raw} is not a directory`);
  return raw;
}

function quotas(raw: unknown, path: string, base: Readonly<TenantQuotas>, fail: Fail): TenantQuotas {
  const fields = object(raw, path, fail);
  unknownFields(fields, new Set(Object.keys(QUOTA_FIELDS)), path, fail);
  const result = { ...base };
  for (const [name, [field, min]] of Object.entries(QUOTA_FIELDS)) {
    if (fields[name] !== undefined) result[field] = count(fields[name], `${path}.${name}`, min, fail);
  }
  return result;
}

function rate(raw: unknown, path: string, base: Readonly<TenantRate>, fail: Fail): TenantRate {
  const fields = object(raw, path, fail);
  unknownFields(fields, new Set(['max', 'window_ms']), path, fail);
  return {
    max: fields.max === undefined ? base.max : count(fields.max, `${path}.max`, 1, fail),
    windowMs: fields.window_ms === undefined ? base.windowMs : count(fields.window_ms, `${path}.window_ms`, 1, fail),
  };
}

function count(raw: unknown, path: string, min: number, fail: Fail): number {
  if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw < min) return fail(path, `must be an integer >= ${min}`);
  return raw;
}

function object(raw: unknown, path: string, fail: Fail, problem = 'must be an object'): Json {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail(path, problem);
  return raw as Json;
}

/** A misspelt field would otherwise be ignored silently, leaving a default the operator meant to change. */
function unknownFields(raw: Json, known: ReadonlySet<string>, path: string, fail: Fail): void {
  const unknown = Object.keys(raw).find((k) => !known.has(k));
  if (unknown) fail(path ? `${path}.${unknown}` : unknown, `unknown field; expected ${[...known].join(', ')}`);
}
