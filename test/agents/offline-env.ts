import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentName } from '../../scripts/install-agents.js';

/**
 * The per-CLI offline setup (the environment and config files that point each real CLI at the
 * loopback model server; test/agents/README.md says why each is needed), without vitest, so the
 * benchmarks (bench/agents.ts) set the CLIs up exactly as the agents suite does.
 */

/** Where the CLI under test keeps its state for one test file: nothing of the real $HOME is used. */
export function scratchHome(): string {
  return mkdtempSync(join(tmpdir(), 'asm-agents-home-'));
}

/** The environment each CLI needs to talk to the model server at `baseUrl`, and config written into `home`. */
export function offlineEnv(name: AgentName, home: string, baseUrl: string): Record<string, string> {
  // Scratch files too (gemini writes error reports and shell state to the temp folder) stay in `home`.
  const TMPDIR = join(home, 'tmp');
  mkdirSync(TMPDIR, { recursive: true });
  return { TMPDIR, ...cliEnv(name, home, baseUrl) };
}

function cliEnv(name: AgentName, home: string, baseUrl: string): Record<string, string> {
  switch (name) {
    case 'claude':
      return {
        HOME: home,
        ANTHROPIC_API_KEY: 'test-key',
        ANTHROPIC_BASE_URL: baseUrl,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
        DISABLE_AUTOUPDATER: '1',
        // An API error would otherwise be retried 10 times with back-off (about 2 minutes).
        CLAUDE_CODE_MAX_RETRIES: '0',
      };
    case 'codex': {
      const codexHome = join(home, '.codex');
      mkdirSync(codexHome, { recursive: true });
      // A custom provider: plain HTTPS-style SSE (no WebSocket attempt), the key from an env var of
      // our choosing, and no retries, so an HTTP error ends the turn at once.
      writeFileSync(
        join(codexHome, 'config.toml'),
        [
          `model = "${CODEX_MODEL}"`,
          'model_provider = "asm_test"',
          '[model_providers.asm_test]',
          'name = "asm-test"',
          `base_url = "${baseUrl}/v1"`,
          'wire_api = "responses"',
          'env_key = "ASM_TEST_OPENAI_KEY"',
          'supports_websockets = false',
          'request_max_retries = 0',
          'stream_max_retries = 0',
          '',
        ].join('\n'),
      );
      // $HOME/.codex, CODEX_HOME's default: through the service that is the session's sandbox HOME,
      // a copy of `home` (ASM_SANDBOX_HOME_TEMPLATE).
      return { HOME: home, ASM_TEST_OPENAI_KEY: 'test-key' };
    }
    case 'gemini': {
      mkdirSync(join(home, '.gemini'), { recursive: true });
      // GOOGLE_GEMINI_BASE_URL alone selects the "gateway" auth type, which 0.61's headless auth check
      // rejects ("Invalid auth method selected", exit 41); a configured API-key auth type wins over
      // the environment and still honours the base URL. maxAttempts 1: a 429 or 5xx would otherwise
      // be retried 10 times from a 5 s back-off.
      writeFileSync(
        join(home, '.gemini', 'settings.json'),
        JSON.stringify({ security: { auth: { selectedType: 'gemini-api-key' } }, general: { maxAttempts: 1 } }),
      );
      return { HOME: home, GEMINI_API_KEY: 'test-key', GOOGLE_GEMINI_BASE_URL: baseUrl };
    }
  }
}

/** A model in codex's built-in catalog, so it does not warn about missing model metadata. */
export const CODEX_MODEL = 'gpt-5.5';
export const GEMINI_MODEL = 'gemini-2.5-flash';
