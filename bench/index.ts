/**
 * Benchmark router: `npm run bench -- <name> [args…]`. Each benchmark is a module whose `run(args)`
 * prints one JSON line on stdout (progress goes to stderr). Add a benchmark by adding it here.
 */
const benchmarks: Record<string, () => Promise<{ run(args: string[]): Promise<void> }>> = {
  lanes: () => import('./lanes.js'),
  bullmq: () => import('./bullmq.js'),
  nodes: () => import('./nodes.js'),
  sandbox: () => import('./sandbox.js'),
  diff: () => import('./diff.js'),
  http: () => import('./http.js'),
  'http-cpu': () => import('./http-cpu.js'),
  observability: () => import('./observability.js'),
  runs: () => import('./runs.js'),
  events: () => import('./events.js'),
  fanout: () => import('./fanout.js'),
  interrupt: () => import('./interrupt.js'),
  agents: () => import('./agents.js'),
  'redis-commands': () => import('./redis-commands.js'),
  'redis-records': () => import('./redis-records.js'),
  logger: () => import('./logger.js'),
  'spawn-helper': () => import('./spawn-helper.js'),
  startup: () => import('./startup.js'),
};

const [name, ...args] = process.argv.slice(2);
const load = name === undefined ? undefined : benchmarks[name];
if (load === undefined) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(benchmarks).join('|')}> [args…]\n`);
  process.exit(2);
}
await (await load()).run(args);
