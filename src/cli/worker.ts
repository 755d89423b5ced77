import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { createApp } from '../app.js';
import { loadConfig } from '../config.js';
import { NODE_NAME } from '../nodes/remote-options.js';
import { startTracing } from '../telemetry.js';
import { stopOnSignals } from './signals.js';

export const WORKER_USAGE = `  asm worker [--name N] [--pool P] [--providers a,b] [--workspace-root D] [--capacity K] [--cookie C]
                                 a worker node of a distributed deployment (REDIS_URL): executes the
                                 remote_node runs handed to it (driver_opts.remote_node "N" or "pool:P");
                                 defaults: name the host name, pool default, every provider,
                                 ASM_WORKSPACE_ROOT, capacity 2, cookie ASM_NODE_COOKIE`;

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
    },
  });
  const problem = !NODE_NAME.test(values.name!)
    ? `--name "${values.name}": letters, digits, _ . @ - only`
    : !NODE_NAME.test(values.pool!)
      ? `--pool "${values.pool}": letters, digits, _ . @ - only`
      : !/^[1-9]\d{0,3}$/.test(values.capacity!)
        ? `--capacity "${values.capacity}": a positive integer`
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
  const stopTracing = await startTracing();
  const app = await createApp(config);
  app.logger.info(
    { name: config.nodeName, instance: app.cluster.self, pool: config.worker.pool, capacity: config.worker.capacity, workspaceRoot: config.workspaceRoot },
    'ASM worker is taking runs',
  );
  stopOnSignals(app, async () => stopTracing?.());
  return -1;
}
