/**
 * Installs the real agent CLIs that `npm run test:agents` drives, at pinned versions, into a cache
 * outside the service's node_modules (so `npm ci` stays light and the service never depends on them):
 *
 *   ${ASM_AGENTS_CACHE:-$HOME/.cache/asm-agents}/<package, "/" → "+">@<version>/node_modules/.bin/<bin>
 *
 * Idempotent: a pin whose binary is already there is skipped. Each pin installs into a scratch folder
 * that is renamed into place only once the binary prints its version, so an interrupted install
 * never looks complete.
 *
 *   npm run install:agents            (npm run test:agents runs it first)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type AgentName = 'claude' | 'codex' | 'gemini';

interface AgentPin {
  package: string;
  version: string;
  bin: string;
  /** Extra `npm install` flags for this package. */
  npmFlags: string[];
}

/**
 * The versions docs/protocols.md describes. claude-code and codex pull their native binary
 * from a platform-specific optional dependency (@anthropic-ai/claude-code-linux-x64,
 * @openai/codex@<ver>-linux-x64), and claude-code's postinstall copies it over its bin stub, so
 * optional dependencies and install scripts stay on for them. gemini-cli's optional dependencies
 * are native add-ons (node-pty, keytar) for the interactive terminal and the OS keychain, which a
 * headless run with an API key does not use; omitting them avoids a node-gyp build.
 */
export const AGENT_PINS: Record<AgentName, AgentPin> = {
  claude: { package: '@anthropic-ai/claude-code', version: '2.1.329', bin: 'claude', npmFlags: [] },
  codex: { package: '@openai/codex', version: '0.169.0', bin: 'codex', npmFlags: [] },
  gemini: { package: '@google/gemini-cli', version: '0.61.0', bin: 'gemini', npmFlags: ['--omit=optional'] },
};

export function agentsCache(env: NodeJS.ProcessEnv = process.env): string {
  return env.ASM_AGENTS_CACHE || join(homedir(), '.cache', 'asm-agents');
}

function pinDir(pin: AgentPin, cache: string): string {
  return join(cache, `${pin.package.replace('/', '+')}@${pin.version}`);
}

/** Where the pinned binary of this agent is (or will be, once installed). */
export function agentBin(name: AgentName, cache = agentsCache()): string {
  const pin = AGENT_PINS[name];
  return join(pinDir(pin, cache), 'node_modules', '.bin', pin.bin);
}

function versionOf(bin: string): string {
  return execFileSync(bin, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 }).trim();
}

function install(name: AgentName, cache: string): void {
  const pin = AGENT_PINS[name];
  const target = pinDir(pin, cache);
  if (existsSync(agentBin(name, cache))) {
    console.log(`${name}: ${pin.package}@${pin.version} already in ${target}`);
    return;
  }
  const scratch = `${target}.partial-${process.pid}`;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  // A package.json of its own, so npm installs here and not into an enclosing project.
  writeFileSync(join(scratch, 'package.json'), '{"private":true}\n');
  console.log(`${name}: installing ${pin.package}@${pin.version} into ${target}`);
  try {
    execFileSync(
      'npm',
      ['install', '--no-audit', '--no-fund', '--no-save', '--no-package-lock', ...pin.npmFlags, `${pin.package}@${pin.version}`],
      { cwd: scratch, stdio: 'inherit' },
    );
    const printed = versionOf(join(scratch, 'node_modules', '.bin', pin.bin));
    if (!printed.includes(pin.version)) throw new Error(`${pin.bin} --version printed "${printed}", expected ${pin.version}`);
    rmSync(target, { recursive: true, force: true });
    renameSync(scratch, target);
  } catch (err) {
    rmSync(scratch, { recursive: true, force: true });
    throw err;
  }
}

function main(): void {
  const cache = agentsCache();
  mkdirSync(cache, { recursive: true });
  for (const name of Object.keys(AGENT_PINS) as AgentName[]) install(name, cache);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
