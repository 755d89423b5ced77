import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import type { FastifyInstance } from 'fastify';
import { parseArgs } from 'node:util';
import { createApp, type AsmApp } from '../app.js';
import { loadConfig } from '../config.js';
import { NODE_NAME } from '../nodes/remote-options.js';
import { buildWorkerFilesServer } from '../http/worker-files.js';
import { buildWorkerServer } from '../http/worker-server.js';
import { startTracing } from '../telemetry.js';
import { assertBindable } from './serve.js';
import { stopOnSignals } from './signals.js';
import { WORKER_USAGE } from './usage.js';

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
      'files-port': { type: 'string' },
      'files-host': { type: 'string' },
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
          : values['files-port'] !== undefined && !/^(0|[1-9]\d{0,4})$/.test(values['files-port'])
            ? `--files-port "${values['files-port']}": a port number, or 0 for any free port`
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
  const filesServer = values['files-port'] !== undefined ? await serveFiles(app, Number(values['files-port']), values['files-host']) : undefined;
  app.logger.info(
    { name: config.nodeName, instance: app.cluster.self, pool: config.worker.pool, capacity: config.worker.capacity, workspaceRoot: config.workspaceRoot },
    'ASM worker is taking runs',
  );
  stopOnSignals(app, async () => {
    await server?.close();
    await filesServer?.close();
    await stopTracing?.();
  });
  return -1;
}

/** The worker's files endpoint (http/worker-files.ts), announced in its heartbeat once it listens. */
async function serveFiles(app: AsmApp, port: number, advertisedHost: string | undefined): Promise<FastifyInstance> {
  const token = randomBytes(32).toString('base64url');
  const server = await buildWorkerFilesServer(app, token);
  await server.listen({ host: app.config.host, port });
  const bound = (server.server.address() as AddressInfo).port;
  const host = advertisedHost ?? (['0.0.0.0', '::'].includes(app.config.host) ? hostname() : app.config.host);
  app.config.worker!.files = { url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}`, token };
  await app.cluster.announce();
  return server;
}
