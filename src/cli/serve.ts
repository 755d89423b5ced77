import { createApp } from '../app.js';
import { loadConfig, type AsmConfig } from '../config.js';
import { buildServer } from '../http/server.js';
import { startTracing } from '../telemetry.js';
import { stopOnSignals } from './signals.js';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Without API keys only loopback may be bound: anyone who reaches the port would be an admin. */
export function assertBindable(config: AsmConfig): void {
  if (config.tenants.keyless && !LOOPBACK.has(config.host)) {
    throw new Error(`refusing to listen on ${config.host} without API keys: set ASM_TENANTS_FILE or ASM_API_KEYS, or bind 127.0.0.1`);
  }
}

/** `asm serve`: runs until SIGINT/SIGTERM, then stops intake, interrupts and drains runs, and exits. Returns -1: the process lives on. */
export async function serveCommand(): Promise<number> {
  const config = loadConfig();
  // The keys are held as digests from here on; the variable would otherwise reach every child process that inherits the environment.
  delete process.env.ASM_API_KEYS;
  assertBindable(config);
  const stopTracing = await startTracing();
  const app = await createApp(config);
  const server = await buildServer(app);
  await server.listen({ host: config.host, port: config.port });
  app.logger.info(
    { url: `http://${config.host}:${config.port}`, mode: app.mode, providers: [...app.providers.keys()], workspaceRoot: config.workspaceRoot },
    'ASM is serving',
  );

  stopOnSignals(app, async () => {
    await server.close();
    await stopTracing?.();
  });
  return -1;
}
