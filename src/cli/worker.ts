import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { createApp } from '../app.js';
import { loadConfig } from '../config.js';
import { NODE_NAME } from '../nodes/remote-options.js';
import { buildWorkerServer } from '../http/worker-server.js';
import { startTracing } from '../telemetry.js';
import { assertBindable } from './serve.js';
import { stopOnSignals } from './signals.js';

export const WORKER_USAGE = `  asm worker [--name N] [--pool P] [--providers a,b] [--workspace-root D] [--capacity K] [--cookie C] [--metrics-port M]
                                 a worker node of a distributed deployment (REDIS_URL): executes the
                                 remote_node runs handed to it (driver_opts.remote_node "N" or "pool:P");
                                 defaults: name the host name, pool default, every provider,
                                 ASM_WORKSPACE_ROOT, capacity 2, cookie ASM_NODE_COOKIE; with
                                 --metrics-port, its own /metrics (admins) on ASM_HOST:M`;

/** `asm worker`: registers, heartbeats and executes remote runs until SIGINT/SIGTERM, then drains and exits. Returns -1: the process lives on. */
export async function workerCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      // The host name: unique per container, so replicas of one compose service need no name each.
      name: { type: 'string', default: hostname() },
      pool: { type: 'string', default: 'default' },
      providers: { type: 'string' },
      'workspace-root': { type: 'string' },
      capacity: { type: 'string', default: '2' },
      cookie: { type: 'string' },
      'metrics-port': { type: 'string' },
    },
  });
  const problem = !NODE_NAME.test(values.name!)
    ? `--name "${values.name}": letters, digits, _ . @ - only`
    : !NODE_NAME.test(values.pool!)
      ? `--pool "${values.pool}": letters, digits, _ . @ - only`
      : !/^[1-9]\d{0,3}$/.test(values.capacity!)
        ? `--capacity "${values.capacity}": a positive integer`
        : values['metrics-port'] !== undefined && !/^[1-9]\d{0,4}$/.test(values['metrics-port'])
          ? `--metrics-port "${values['metrics-port']}": a port number`
          : undefined;
  if (problem) {
    process.stderr.write(`asm worker: ${problem}\n\nUsage:\n${WORKER_USAGE}\n`);
    return 2;
  }
  const env = { ...process.env, ASM_NODE_NAME: values.name, ...(values['workspace-root'] && { ASM_WORKSPACE_ROOT: values['workspace-root'] }) };
  const config = loadConfig(env);
  config.worker = {
    pool: values.pool!,
    capacity: Number(values.capacity),
    providers: values.providers ? values.providers.split(',').map((p) => p.trim()).filter(Boolean) : null,
    cookie: values.cookie ?? (process.env.ASM_NODE_COOKIE || null),
  };
  const metricsPort = values['metrics-port'] === undefined ? undefined : Number(values['metrics-port']);
  if (metricsPort !== undefined) assertBindable(config);
  const stopTracing = await startTracing();
  const app = await createApp(config);
  // Each process serves its own metrics: a worker's runs are counted where they execute.
  const server = metricsPort !== undefined && config.metrics ? await buildWorkerServer(app) : undefined;
  await server?.listen({ host: config.host, port: metricsPort });
  app.logger.info(
    { name: config.nodeName, instance: app.cluster.self, pool: config.worker.pool, capacity: config.worker.capacity, workspaceRoot: config.workspaceRoot },
    'ASM worker is taking runs',
  );
  stopOnSignals(app, async () => {
    await server?.close();
    await stopTracing?.();
  });
  return -1;
}
