import { describe, expect, it } from 'vitest';
import claude from '../../src/providers/claude/index.js';
import { loadProviders, probeVersion, resolveBinary } from '../../src/providers/registry.js';
import shell from '../../src/providers/shell.js';

describe('provider registry', () => {
  it('discovers the provider files of its folder, once', async () => {
    const providers = await loadProviders();
    expect([...providers.keys()].sort()).toEqual(['amp', 'claude', 'codex', 'gemini', 'shell']);
    expect(providers.has('common')).toBe(false);
    expect(providers.has('types')).toBe(false);
    expect(providers.get('shell')!.create).toBe(shell.create);
    expect(await loadProviders()).toBe(providers);
  });

  it('resolves the binary: the configured path, else the default', () => {
    expect(resolveBinary(claude, { claude: '/opt/claude/bin/claude' })).toBe('/opt/claude/bin/claude');
    expect(resolveBinary(claude, { codex: '/opt/codex' })).toBe('claude');
  });

  it('probes a CLI without ever rejecting', async () => {
    expect(await probeVersion(shell, '/bin/sh')).toEqual({ installed: true, version: null });
    expect(await probeVersion(claude, '/nonexistent/claude')).toEqual({ installed: false, version: null });
    // A binary that prints a version: the first line of its output.
    const node = { ...shell, versionArgs: ['--version'] };
    expect(await probeVersion(node, process.execPath)).toEqual({ installed: true, version: process.version });
  });
});
