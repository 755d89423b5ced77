import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/ports.js';
import { scratchDir } from '../helpers/sandbox.js';
import { SERVER_MODES, startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { parseExposition, sample } from './exposition.js';

/**
 * The operator's side: the alerting rules pass `promtool check rules`; every metric the rules and the
 * Grafana dashboard name is one a live server exposes; and a real Prometheus (the Debian package,
 * on loopback) scrapes a live server, loads the rules and answers queries about it.
 */

const ALERTS = new URL('../../docker/prometheus/alerts.yml', import.meta.url).pathname;
const ALERT_TESTS = new URL('../../docker/prometheus/alerts.test.yml', import.meta.url).pathname;
const DASHBOARD = new URL('../../docker/grafana/asm.json', import.meta.url).pathname;

/** Metric names in PromQL expressions: identifiers before `{`, `[`, `)` or an operator, minus functions and keywords. */
function metricNames(expr: string): string[] {
  const withoutStrings = expr.replace(/"[^"]*"/g, '""').replace(/\{[^}]*\}/g, '').replace(/\[[^\]]*\]/g, '');
  const words = withoutStrings.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  const promql = new Set(['sum', 'max', 'min', 'by', 'rate', 'increase', 'histogram_quantile', 'max_over_time', 'or', 'and', 'le', 'lane', 'role', 'route', 'status_code', 'provider', 'backend', 'state', 'error_kind', 'decision', 'type', 'kind', 'transport', 'queue', 'instance']);
  return [...new Set(words.filter((w) => !promql.has(w)))];
}

/** The series names a scrape declares (`# TYPE` lines), a histogram's _bucket, _count and _sum included, whether or not they have samples yet. */
function declared(text: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name!);
    if (type === 'histogram' || type === 'summary') for (const suffix of ['_bucket', '_count', '_sum']) names.add(name + suffix);
  }
  return names;
}

describe('alerting rules and dashboard', () => {
  let server: TestServer;
  beforeAll(async () => {
    // Distributed mode: the Redis link and the node families exist there only.
    server = await startServer(SERVER_MODES[1]![1]());
  });
  afterAll(() => server.close());

  it('passes promtool check rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', ALERTS], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS: 6 rules found');
  });

  it('fires each alert on the series its unit tests give (promtool test rules)', () => {
    const out = execFileSync('promtool', ['test', 'rules', ALERT_TESTS], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS');
    // Every rule has a case that expects it to fire.
    const cases = readFileSync(ALERT_TESTS, 'utf8');
    for (const name of ['AsmDown', 'AsmRedisUnreachable', 'AsmLanePressure', 'AsmDeadLettersGrowing', 'AsmApprovalsWaiting', 'AsmNodeLost']) {
      expect(cases).toMatch(new RegExp(`alertname: ${name}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
    }
  });

  it('names only metrics a live server exposes', async () => {
    await server.request('GET', '/healthz');
    const text = (await server.request('GET', '/metrics')).body;
    const samples = parseExposition(text);
    expect(sample(samples, 'asm_redis_up')).toBe(1);
    expect(sample(samples, 'asm_nodes', { role: 'api' })).toBe(1);
    expect(sample(samples, 'asm_nodes', { role: 'worker' })).toBe(0);
    const names = declared(text);
    const alerts = readFileSync(ALERTS, 'utf8').match(/expr: .*/g)!.map((line) => line.slice('expr: '.length));
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')).panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr as string));
    expect(alerts).toHaveLength(6);
    expect(dashboard.length).toBeGreaterThan(20);
    // `up` is Prometheus's own, per target.
    const missing = [...alerts, ...dashboard].flatMap(metricNames).filter((name) => name !== 'up' && !names.has(name));
    expect(missing).toEqual([]);
  });
});

describe('a real Prometheus scraping a live server', () => {
  let server: TestServer;
  let prometheus: ChildProcess;
  let output = '';
  let api: string;
  const dir = scratchDir('asm-prometheus-');

  beforeAll(async () => {
    server = await startServer();
    const target = new URL(server.url).host;
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    copyFileSync(ALERTS, join(dir, 'alerts.yml'));
    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: asm\n    static_configs: [{targets: ['${target}']}]\n`,
    );
    prometheus = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    prometheus.stdout!.on('data', (chunk) => (output += chunk));
    prometheus.stderr!.on('data', (chunk) => (output += chunk));
  });
  afterAll(async () => {
    prometheus.kill('SIGTERM');
    await new Promise((resolve) => (prometheus.exitCode !== null ? resolve(null) : prometheus.once('exit', resolve)));
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const query = async (promql: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> => {
    const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`).catch(() => undefined);
    if (!res?.ok) return [];
    return ((await res.json()) as any).data.result;
  };

  it('scrapes /metrics, stores the families and evaluates the rules', async () => {
    const s = (await server.request('POST', '/v1/sessions', { provider: 'claude' })).body;
    const run = (await server.request('POST', `/v1/sessions/${s.id}/runs`, { prompt: 'hi [fixture:c1-hello]', wait: true })).body;
    expect(run.state).toBe('completed');

    const up = await waitFor(
      async () => {
        if (prometheus.exitCode !== null) throw new Error(`prometheus exited:\n${output}`);
        const [sample] = await query('up{job="asm"}');
        return sample?.value[1] === '1' && sample;
      },
      'Prometheus to scrape the server',
      30_000,
    );
    expect(up.metric.instance).toBe(new URL(server.url).host);
    const finished = await waitFor(async () => (await query('asm_runs_finished_total'))[0], 'the run counter in Prometheus', 15_000);
    expect(finished.metric).toMatchObject({ provider: 'claude', backend: 'core', queue: 'prompt', state: 'completed', error_kind: 'none' });
    expect(finished.value[1]).toBe('1');
    expect((await query('sum(asm_lane_pending)'))[0]!.value[1]).toBe('0');
    const p95 = await query('histogram_quantile(0.95, sum by (le) (asm_http_request_duration_seconds_bucket))');
    expect(Number(p95[0]!.value[1])).toBeGreaterThan(0);

    const rules = await waitFor(async () => {
      const body = (await (await fetch(`${api}/api/v1/rules`)).json()) as any;
      const all = body.data.groups.flatMap((g: any) => g.rules);
      return all.length === 6 && all.every((r: any) => r.health === 'ok') && all;
    }, 'the rules to be evaluated', 15_000);
    expect(rules.map((r: any) => r.name).sort()).toEqual(['AsmApprovalsWaiting', 'AsmDeadLettersGrowing', 'AsmDown', 'AsmLanePressure', 'AsmNodeLost', 'AsmRedisUnreachable']);
    // A healthy embedded server fires none of them.
    expect(rules.filter((r: any) => r.state === 'firing')).toEqual([]);
  }, 60_000);
});
