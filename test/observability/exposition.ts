/**
 * The Prometheus text format read back for assertions: each sample line becomes
 * `name{label="value",…}` (labels sorted) → value. Comments and blank lines are skipped.
 */
export type Samples = Map<string, number>;

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseExposition(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = SAMPLE.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels = Object.fromEntries([...(match[2] ?? '').matchAll(LABEL)].map(([, key, value]) => [key!, value!]));
    samples.set(key(match[1]!, labels), Number(match[3]));
  }
  return samples;
}

export function key(name: string, labels: Record<string, string> = {}): string {
  const rendered = Object.keys(labels).sort().map((k) => `${k}="${labels[k]}"`).join(',');
  return rendered ? `${name}{${rendered}}` : name;
}

/** The value of one series, or undefined when the scrape does not have it. */
export function sample(samples: Samples, name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.get(key(name, labels));
}
