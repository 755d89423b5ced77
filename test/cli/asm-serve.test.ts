import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { groupAlive } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';
import { serveProcess, untilServing, type ServeProcess } from '../helpers/processes.js';
import { waitFor } from '../helpers/wait.js';

/** `asm serve` as an operator runs it: a real process, its refusal to expose itself, and its shutdown. */

const children: ChildProcess[] = [];
const dirs: string[] = [];

function serve(env: Record<string, string>): ServeProcess {
  const workspace = mkdtempSync(join(tmpdir(), 'asm-serve-'));
  dirs.push(workspace);
  const server = serveProcess({ ASM_WORKSPACE_ROOT: workspace, ...env });
  children.push(server.child);
  return server;
}

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('asm serve', () => {
  it('refuses to listen on a non-loopback address without API keys', async () => {
    const server = serve({ ASM_HOST: '0.0.0.0', ASM_PORT: String(await freePort()) });
    expect(await server.exited).toBe(1);
    expect(server.output()).toContain('refusing to listen on 0.0.0.0 without API keys');
  });

  it('refuses an invalid setting, naming the variable', async () => {
    const server = serve({ ASM_PORT: 'eighty' });
    expect(await server.exited).toBe(1);
    expect(server.output()).toContain('ASM_PORT');
  });

  it('on SIGTERM interrupts running runs, kills their processes and exits 0', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const server = serve({ ASM_PORT: String(port), ASM_INTERRUPT_GRACE_MS: '1000' });
    await untilServing(url);
    const json = { 'content-type': 'application/json' };
    const session: any = await (await fetch(`${url}/v1/sessions`, { method: 'POST', headers: json, body: JSON.stringify({ provider: 'shell' }) })).json();
    const run: any = await (
      await fetch(`${url}/v1/sessions/${session.id}/runs`, { method: 'POST', headers: json, body: JSON.stringify({ prompt: 'echo $$; sleep 30' }) })
    ).json();
    // The run's process group, as run_started reports it (the shell's own $$ counts in the sandbox's PID namespace).
    const shellPid = await waitFor(async () => {
      const page: any = await (await fetch(`${url}/v1/runs/${run.id}/events`)).json();
      const printed = page.events.some((e: any) => e.kind === 'assistant_delta');
      return printed && Number(page.events.find((e: any) => e.kind === 'run_started').payload.pid);
    }, 'the shell to print its pid');
    expect(shellPid).toBeGreaterThan(0);

    const stoppedAt = Date.now();
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    expect(groupAlive(shellPid)).toBe(false);
    expect(server.output()).toContain('shutdown complete');
  });
});
