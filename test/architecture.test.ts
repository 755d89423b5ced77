import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/**
 * The architecture rules of .dependency-cruiser.cjs: src follows them, and each one catches its
 * violation in test/fixtures/arch, a small tree with the folders of src where every file marked
 * "Forbidden by <rule>" breaks that rule and every other import is one the rules allow.
 */

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = join(ROOT, 'node_modules', '.bin', 'depcruise');
const FIXTURE = join(ROOT, 'test', 'fixtures', 'arch');
const RULES: string[] = createRequire(import.meta.url)(CONFIG).forbidden.map((rule: { name: string }) => rule.name);

/** `depcruise src` with the project's rules, run in `cwd` as `npm run lint:arch` runs it in the root. */
async function lintArch(cwd: string, ...args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(DEPCRUISE, ['src', '--config', CONFIG, ...args], { cwd });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, output: failed.stdout + failed.stderr };
  }
}

describe('architecture (npm run lint:arch)', () => {
  it('passes on src', async () => {
    const { code, output } = await lintArch(ROOT);
    expect(code, output).toBe(0);
  });

  it('fails on the fixture tree, naming every rule', async () => {
    const { code, output } = await lintArch(FIXTURE);
    expect(code).toBeGreaterThan(0);
    for (const rule of RULES) expect(output).toContain(`error ${rule}:`);
  });

  it('flags exactly the fixture imports marked forbidden', async () => {
    const { output } = await lintArch(FIXTURE, '--output-type', 'json');
    const violations = JSON.parse(output).summary.violations.map((v: any) => `${v.rule.name}: ${v.from} → ${v.to}`);
    expect(violations.sort()).toEqual([
      'client-knows-only-the-wire: src/client/index.ts → src/sessions/service.ts',
      'error-kinds-are-a-leaf: src/errors/kinds.ts → src/version.ts',
      'http-on-top: src/store/memory.ts → src/http/errors.ts',
      'lanes-stand-alone: src/lanes/engine.ts → src/sessions/serial.ts',
      'no-cycles: src/backends/core.ts → src/backends/run.ts',
      'no-folder-cycles: src/nodes → src/sessions',
      'no-folder-cycles: src/sessions → src/nodes',
      'providers-know-no-transport: src/providers/claude.ts → src/store/types.ts',
      'schemas-are-leaves: src/schemas/events.ts → src/config.ts',
    ]);
  });
});
