import { describe, expect, it } from 'vitest';
import { REMOTE_DEFAULTS, remoteTarget, resolveRemoteOptions } from '../../src/nodes/remote-options.js';
import { compatibleVersions, cookieHash } from '../../src/nodes/remote-start.js';
import { AsmError } from '../../src/errors/kinds.js';

function refusal(layers: Array<Record<string, unknown>>): AsmError {
  try {
    resolveRemoteOptions(layers);
  } catch (err) {
    return err as AsmError;
  }
  throw new Error('expected a refusal');
}

describe('remote options: one resolver', () => {
  it('fills the documented defaults', () => {
    expect(resolveRemoteOptions([{ remote_node: 'w1' }])).toEqual({ ...REMOTE_DEFAULTS, remote_node: 'w1' });
    expect(REMOTE_DEFAULTS).toMatchObject({
      remote_connect_timeout_ms: 5_000,
      remote_rpc_timeout_ms: 15_000,
      remote_bootstrap_mode: 'require_prestarted',
      remote_transport_call_timeout_ms: 5_000,
    });
  });

  it('applies server → session → run, the later layer winning key by key, and keeps unknown keys', () => {
    const server = { remote_node: 'pool:default', remote_rpc_timeout_ms: 1_000, remote_cookie: 'c0' };
    const session = { remote_node: 's1', remote_connect_timeout_ms: 2_000, x_future: { a: 1 } };
    const run = { remote_node: 'r1', remote_cookie: null, remote_cwd: ' proj ' };
    expect(resolveRemoteOptions([server, session, run])).toEqual({
      ...REMOTE_DEFAULTS,
      remote_node: 'r1',
      remote_rpc_timeout_ms: 1_000,
      remote_connect_timeout_ms: 2_000,
      remote_cookie: null,
      remote_cwd: 'proj',
      x_future: { a: 1 },
    });
    // An absent key in a higher layer leaves the lower one standing.
    expect(resolveRemoteOptions([server, {}]).remote_node).toBe('pool:default');
  });

  it.each([
    [{}, 'driver_opts.remote_node'],
    [{ remote_node: '  ' }, 'driver_opts.remote_node'],
    [{ remote_node: 'pool:' }, 'driver_opts.remote_node'],
    [{ remote_node: 'a b' }, 'driver_opts.remote_node'],
    [{ remote_node: 'w1', remote_rpc_timeout_ms: 0 }, 'driver_opts.remote_rpc_timeout_ms'],
    [{ remote_node: 'w1', remote_connect_timeout_ms: 1.5 }, 'driver_opts.remote_connect_timeout_ms'],
    [{ remote_node: 'w1', remote_boot_lease_timeout_ms: '10' }, 'driver_opts.remote_boot_lease_timeout_ms'],
    [{ remote_node: 'w1', remote_transport_call_timeout_ms: -5 }, 'driver_opts.remote_transport_call_timeout_ms'],
    [{ remote_node: 'w1', remote_bootstrap_mode: 'maybe' }, 'driver_opts.remote_bootstrap_mode'],
    [{ remote_node: 'w1', remote_cookie: 42 }, 'driver_opts.remote_cookie'],
    [{ remote_node: 'w1', remote_cwd: '' }, 'driver_opts.remote_cwd'],
  ])('refuses %j as config_invalid naming %s', (layer, field) => {
    const err = refusal([layer]);
    expect(err).toBeInstanceOf(AsmError);
    expect(err.kind).toBe('config_invalid');
    expect(err.details).toEqual({ field });
  });

  it('reads a target as a node or a pool', () => {
    expect(remoteTarget('w1')).toEqual({ kind: 'node', name: 'w1' });
    expect(remoteTarget('pool:gpu')).toEqual({ kind: 'pool', pool: 'gpu' });
  });
});

describe('remote start checks', () => {
  it('compares versions by major.minor, digit runs only, unparsable incompatible', () => {
    expect(compatibleVersions('0.9.2', '0-9-build7')).toBe(true);
    expect(compatibleVersions('0.9.2', '0.10.0')).toBe(false);
    expect(compatibleVersions('1.2.3', '1.2.99')).toBe(true);
    expect(compatibleVersions('unknown', '0.1.0')).toBe(false);
  });

  it('publishes a hash of the cookie, never the cookie', () => {
    expect(cookieHash(null)).toBeNull();
    expect(cookieHash('secret')).toMatch(/^[0-9a-f]{64}$/);
    expect(cookieHash('secret')).not.toContain('secret');
  });
});
