/**
 * A CPU profile of a running `asm serve`, taken through its inspector, and what it says in shares of
 * the main thread's busy time: by function, and by part (a package, a file of ASM, the collector,
 * the native calls). RESULTS.md says why a target is missed by such profiles; this makes them
 * something any pass can take again (`npm run bench -- http-cpu --profile`).
 *
 * The server is started with NODE_OPTIONS `--inspect` on a port of its own (`inspectEnv`); nothing is
 * attached until `profile` runs, and ASM passes no NODE_OPTIONS on to the CLIs it starts
 * (src/providers/env.ts).
 */
import { writeFileSync } from 'node:fs';
import WebSocket from 'ws';
import { freePort } from '../test/helpers/ports.js';

/** The profiler's sampling interval: 100 µs sees a request's parts (a few hundred µs each) without doubling its cost. */
const INTERVAL_US = 100;
const TOP = 12;

export interface Inspectable {
  env: Record<string, string>;
  port: number;
}

export async function inspectEnv(): Promise<Inspectable> {
  const port = await freePort();
  return { port, env: { NODE_OPTIONS: `--inspect=127.0.0.1:${port}` } };
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Profiles the server listening for its inspector on `port` while `load` runs, and writes the profile to `file` (for Chrome's DevTools). */
export async function profile<T>(port: number, file: string, load: () => Promise<T>): Promise<{ result: T; summary: ProfileSummary }> {
  const [target] = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{ webSocketDebuggerUrl: string }>;
  const socket = new WebSocket(target!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  let nextId = 0;
  const call = (method: string, params: object = {}) =>
    new Promise<any>((resolve, reject) => {
      const id = ++nextId;
      const onMessage = (data: WebSocket.RawData) => {
        const message = JSON.parse(String(data));
        if (message.id !== id) return;
        socket.off('message', onMessage);
        if (message.error) reject(new Error(`${method}: ${message.error.message}`));
        else resolve(message.result);
      };
      socket.on('message', onMessage);
      socket.send(JSON.stringify({ id, method, params }));
    });
  try {
    await call('Profiler.enable');
    await call('Profiler.setSamplingInterval', { interval: INTERVAL_US });
    await call('Profiler.start');
    const result = await load();
    const { profile: taken } = (await call('Profiler.stop')) as { profile: Profile };
    writeFileSync(file, JSON.stringify(taken));
    return { result, summary: summarize(taken) };
  } finally {
    socket.close();
  }
}

export interface ProfileSummary {
  /** ms the main thread was busy (not idle) while profiled. */
  busy_ms: number;
  /** [part, share of the busy time] for the largest parts: a package, a source file, or what V8 names. */
  parts: Array<[string, number]>;
  /** [function at its place, share of the busy time], the largest self times. */
  functions: Array<[string, number]>;
}

/** Self time per function and per part, as shares (%) of the busy time. */
export function summarize(taken: Profile): ProfileSummary {
  const byId = new Map(taken.nodes.map((node) => [node.id, node]));
  const self = new Map<number, number>();
  taken.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (taken.timeDeltas[i + 1] ?? 0)));
  const parts = new Map<string, number>();
  const functions = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === '(idle)') continue;
    busy += us;
    const part = partOf(url, functionName);
    parts.set(part, (parts.get(part) ?? 0) + us);
    const name = `${functionName || '(anonymous)'}${url ? ` ${part}:${lineNumber + 1}` : ''}`;
    functions.set(name, (functions.get(name) ?? 0) + us);
  }
  const top = (totals: Map<string, number>) =>
    [...totals]
      .sort((a, b) => b[1] - a[1])
      .slice(0, TOP)
      .map(([name, us]): [string, number] => [name, Math.round((us / busy) * 1000) / 10]);
  return { busy_ms: Math.round(busy / 1000), parts: top(parts), functions: top(functions) };
}

/** A package by its name, ASM's built files by their path in dist/ (src/ holds their sources), Node's own by theirs; V8's entries ("(garbage collector)", native calls) as named. */
function partOf(url: string, functionName: string): string {
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (inPackage) return inPackage[1]!;
  const inDist = /\/(dist\/.+\.js)$/.exec(url);
  if (inDist) return inDist[1]!;
  return url || functionName;
}
