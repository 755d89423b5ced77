import { describe, expect, it } from 'vitest';
import { BASE_ENV_NAMES, buildCliEnv } from '../../src/providers/env.js';
import gemini from '../../src/providers/gemini/index.js';

const SERVICE_ENV = {
  PATH: '/usr/bin:/bin',
  HOME: '/home/asm',
  LANG: 'C.UTF-8',
  TERM: 'xterm',
  ASM_API_KEYS: 'k_0123456789abcdef:tenant',
  ANTHROPIC_API_KEY: 'sk-ant-test',
  OPENAI_API_KEY: 'sk-openai-test',
  HTTPS_PROXY: 'http://proxy:3128',
  UNSET: undefined,
};

describe('buildCliEnv', () => {
  it('passes the base set that is present, and nothing else by default', () => {
    expect(buildCliEnv(SERVICE_ENV, [], [])).toEqual({
      PATH: '/usr/bin:/bin',
      HOME: '/home/asm',
      LANG: 'C.UTF-8',
      TERM: 'xterm',
    });
  });

  it('adds the provider names and the operator pass-through names', () => {
    const env = buildCliEnv(SERVICE_ENV, ['ANTHROPIC_API_KEY'], ['HTTPS_PROXY']);
    expect(env.ANTHROPIC_API_KEY).toBe('sk-ant-test');
    expect(env.HTTPS_PROXY).toBe('http://proxy:3128');
    expect(env).not.toHaveProperty('OPENAI_API_KEY');
  });

  it('never leaks the service secrets', () => {
    const env = buildCliEnv(SERVICE_ENV, ['ANTHROPIC_API_KEY'], []);
    expect(env).not.toHaveProperty('ASM_API_KEYS');
  });

  it('skips names that are not set', () => {
    const env = buildCliEnv(SERVICE_ENV, ['UNSET', 'MISSING'], ['ALSO_MISSING']);
    expect(Object.keys(env)).toEqual(['PATH', 'HOME', 'LANG', 'TERM']);
  });

  it('sets the provider\'s fixed variables whatever the service\'s environment holds', () => {
    const env = buildCliEnv({ ...SERVICE_ENV, GEMINI_CLI_NO_RELAUNCH: 'false' }, ['GEMINI_CLI_NO_RELAUNCH'], [], gemini.setEnv);
    expect(env.GEMINI_CLI_NO_RELAUNCH).toBe('true');
    expect(buildCliEnv(SERVICE_ENV, [], [], gemini.setEnv)).toEqual({ PATH: '/usr/bin:/bin', HOME: '/home/asm', LANG: 'C.UTF-8', TERM: 'xterm', GEMINI_CLI_NO_RELAUNCH: 'true' });
  });

  it('documents a fixed base set', () => {
    expect(BASE_ENV_NAMES).toEqual(['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'TERM']);
  });
});
