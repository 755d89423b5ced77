import { afterEach, describe, expect, it } from 'vitest';
import { reply, startServer, type TestServer } from '../helpers/server.js';

/**
 * How the service starts its CLIs and git (ASM_SPAWNER; src/backends/spawn-child.ts): /readyz says
 * which, and a run whose workspace diff is on (its snapshots are git) goes the whole way with either.
 */

let server: TestServer;

afterEach(async () => {
  await server.close();
});

describe.each(['posix_spawn', 'fork'])('ASM_SPAWNER=%s', (spawner) => {
  it('is reported by /readyz, and a run that changes its workspace completes with its output and its diff', async () => {
    server = await startServer({ ASM_SPAWNER: spawner });
    expect((await reply(server.client.GET('/readyz'))).body.checks).toMatchObject({ spawner });
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    const run = await reply(
      server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: `echo "started by ${spawner}" | tee note.txt`, wait: true } }),
    );
    expect(run.body).toMatchObject({ state: 'completed', result: { text: `started by ${spawner}\n` } });
    const events = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.body.id }, query: { after: 0 } } }))).body.events;
    const diff = events.find((event: any) => event.kind === 'workspace_diff');
    expect(diff?.payload).toMatchObject({ changed_files: 1, files: [{ path: 'note.txt', status: 'added', additions: 1 }] });
  });
});
