import { createInterface } from 'node:readline/promises';
import WebSocket from 'ws';
import type { AsmEvent } from '../schemas/events.js';

/**
 * `asm run`: a terminal client of a running service. It creates a session, submits one run, follows
 * the run's events over the WebSocket from seq 0 (so nothing before the socket opened is missed), asks
 * each approval on the terminal, and sends an interrupt on Ctrl-C (a second Ctrl-C quits).
 * Exit status: 0 completed, 1 failed, 130 interrupted.
 */

export interface RunOptions {
  url: string;
  apiKey?: string;
  provider: string;
  cwd?: string;
  model?: string;
  permissionMode?: string;
  prompt: string;
}

const out = process.stdout;
const err = process.stderr;

export async function runCommand(opts: RunOptions): Promise<number> {
  const api = client(opts.url, opts.apiKey);
  const session = await api('POST', '/v1/sessions', {
    provider: opts.provider,
    ...(opts.cwd && { cwd: opts.cwd }),
    ...(opts.model && { model: opts.model }),
    ...(opts.permissionMode && { permission_mode: opts.permissionMode }),
  });
  try {
    const run = await api('POST', `/v1/sessions/${session.id}/runs`, { prompt: opts.prompt });
    err.write(`session ${session.id} · run ${run.id} · ${session.provider} in ${session.cwd}\n`);
    return await follow(opts, run.id);
  } finally {
    await api('DELETE', `/v1/sessions/${session.id}`).catch(() => undefined);
  }
}

function follow(opts: RunOptions, runId: string): Promise<number> {
  const wsUrl = new URL(`/v1/events?run_id=${encodeURIComponent(runId)}&after=0`, opts.url.replace(/^http/, 'ws'));
  const socket = new WebSocket(wsUrl, { headers: opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {} });
  const prompt = createInterface({ input: process.stdin, output: err, terminal: process.stdin.isTTY ?? false });
  const answers = lineQueue(prompt);
  // Approvals are asked one at a time, in the order the agent raised them.
  let asking: Promise<void> = Promise.resolve();
  let interrupts = 0;

  return new Promise<number>((resolve, reject) => {
    const finish = (code: number) => {
      process.off('SIGINT', onSigint);
      prompt.close();
      socket.close();
      resolve(code);
    };
    const onSigint = () => {
      if (++interrupts > 1) return finish(130);
      err.write('\ninterrupting… (Ctrl-C again to quit)\n');
      socket.send(JSON.stringify({ type: 'interrupt', run_id: runId }));
    };
    process.on('SIGINT', onSigint);
    // On a terminal readline reads raw keys, so Ctrl-C reaches it rather than the process.
    prompt.on('SIGINT', onSigint);
    socket.on('error', (e) => reject(new Error(`event stream: ${e.message}`)));
    socket.on('close', (code, reason) => {
      if (code === 4008) err.write(`stream closed: too slow (${reason.toString()})\n`);
    });
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'error') {
        err.write(`error: ${frame.error.kind}: ${frame.error.message}\n`);
        return;
      }
      if (frame.type !== 'event') return;
      const event = frame.event as AsmEvent;
      render(event);
      if (event.kind === 'approval_requested') {
        asking = asking.then(() => ask(answers, socket, event));
      }
      const exit = exitCodeOf(event);
      if (exit !== undefined) void asking.then(() => finish(exit));
    });
  });
}

/**
 * Answers read from stdin, kept from the moment the interface opens: piped input (`echo y | asm run …`)
 * arrives before any question is asked, and readline's question() would drop it. At EOF: null.
 */
function lineQueue(rl: ReturnType<typeof createInterface>): (question: string) => Promise<string | null> {
  const lines: string[] = [];
  const waiting: Array<(line: string | null) => void> = [];
  let closed = false;
  rl.on('line', (line) => (waiting.length ? waiting.shift()!(line) : lines.push(line)));
  rl.on('close', () => {
    closed = true;
    for (const wake of waiting.splice(0)) wake(null);
  });
  return (question) => {
    err.write(question);
    if (lines.length) return Promise.resolve(lines.shift()!);
    if (closed) return Promise.resolve(null);
    return new Promise((resolve) => waiting.push(resolve));
  };
}

async function ask(answers: (question: string) => Promise<string | null>, socket: WebSocket, event: AsmEvent): Promise<void> {
  const p = event.payload as { approval_id: string; subject: string; details: { tool_input: unknown } };
  const line = await answers(`allow ${p.subject} ${JSON.stringify(p.details.tool_input)}? [y]es / [s]ession / [n]o: `);
  // A terminal echoes what was typed; piped input is shown, so the transcript reads as a dialogue.
  if (!process.stdin.isTTY) err.write(`${line ?? '(end of input)'}\n`);
  const answer = (line ?? 'n').trim().toLowerCase();
  const decision = answer.startsWith('y') ? 'allow' : answer.startsWith('s') ? 'allow_for_session' : 'deny';
  socket.send(JSON.stringify({ type: 'approve', approval_id: p.approval_id, decision, reason: decision === 'deny' ? 'denied on the terminal' : undefined }));
}

function exitCodeOf(event: AsmEvent): number | undefined {
  if (event.kind === 'result' || event.kind === 'run_completed') return 0;
  if (event.kind === 'error') return (event.payload as { kind: string }).kind === 'user_cancelled' ? 130 : 1;
  return undefined;
}

function render(event: AsmEvent): void {
  const p = event.payload as Record<string, any>;
  const short = (value: unknown, max = 400) => {
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    return text.length > max ? `${text.slice(0, max)}…` : text;
  };
  switch (event.kind) {
    case 'assistant_delta':
      out.write(p.content);
      break;
    case 'assistant_message':
      out.write(`${p.content}\n`);
      break;
    case 'thinking':
      err.write(`(thinking) ${short(p.content)}\n`);
      break;
    case 'tool_use':
      err.write(`→ ${p.tool_name} ${short(p.input)}\n`);
      break;
    case 'tool_result':
      err.write(`← ${p.is_error ? 'error: ' : ''}${short(p.content)}\n`);
      break;
    case 'approval_resolved':
      err.write(`${p.decision === 'deny' ? '✗ denied' : '✓ allowed'}${p.reason ? ` (${p.reason})` : ''}\n`);
      break;
    case 'stderr':
      err.write(String(p.content).endsWith('\n') ? p.content : `${p.content}\n`);
      break;
    case 'result':
      err.write(
        `— completed${p.stop_reason ? ` (${p.stop_reason})` : ''}` +
          `${p.usage ? ` · ${p.usage.input_tokens} in / ${p.usage.output_tokens} out tokens` : ''}` +
          `${p.cost_usd != null ? ` · $${Number(p.cost_usd).toFixed(4)}` : ''}\n`,
      );
      break;
    case 'error':
      err.write(`— ${p.kind === 'user_cancelled' ? 'interrupted' : 'failed'}: ${p.kind}: ${p.message}\n`);
      break;
  }
}

function client(base: string, apiKey?: string) {
  if (!URL.canParse(base) || !/^https?:$/.test(new URL(base).protocol)) throw new Error(`--url: "${base}" is not an http(s) URL (e.g. http://127.0.0.1:8787)`);
  return async (method: string, path: string, body?: unknown): Promise<any> => {
    const response = await fetch(new URL(path, base), {
      method,
      headers: { ...(body !== undefined && { 'content-type': 'application/json' }), ...(apiKey && { authorization: `Bearer ${apiKey}` }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).catch((cause: unknown) => {
      throw unreachable(base, cause);
    });
    const data: any = response.status === 204 ? null : await response.json();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${data?.error?.kind}: ${data?.error?.message}`);
    return data;
  };
}

/** fetch's bare "fetch failed", said for a person: which URL, why, and the two ways out. */
function unreachable(base: string, cause: unknown): Error {
  const reason = (cause as { cause?: { code?: string; message?: string } })?.cause;
  const why = reason?.code ?? reason?.message ?? (cause instanceof Error ? cause.message : String(cause));
  return new Error(
    `cannot reach the ASM service at ${base} (${why}).\n` +
      `  Start one with \`asm serve\` (or \`npm start\` in the repository), or point --url or ASM_URL at a running service.`,
  );
}
