import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { freePort } from '../helpers/ports.js';

/**
 * A loopback stand-in for the three model APIs the real agent CLIs call, so `npm run test:agents`
 * can drive the real binaries offline. One HTTP server on 127.0.0.1 speaks, streamed (SSE):
 *
 *   POST /v1/messages                                   Anthropic Messages   (claude,  ANTHROPIC_BASE_URL)
 *   POST /v1/responses                                  OpenAI Responses     (codex,   model_providers.<x>.base_url)
 *   POST /v1beta/models/<model>:streamGenerateContent   Gemini               (gemini,  GOOGLE_GEMINI_BASE_URL)
 *
 * A test scripts the model's next turns in a dialect-neutral way (text, a shell call, an HTTP error);
 * each model request takes the next turn and gets it rendered in the caller's dialect. Every request
 * is recorded with the tool results it carried back, so a test can check that a tool's output
 * reached the model. What each CLI sends and needs is written down in test/agents/README.md.
 */

export type Dialect = 'anthropic' | 'openai' | 'gemini';

export interface TurnUsage {
  input: number;
  output: number;
}

export type ModelTurn =
  /** The model answers with text and ends its turn. */
  | { text: string; usage?: TurnUsage }
  /**
   * The model calls the CLI's shell tool with this command (after optional text). `escalate` asks
   * codex to run it outside its sandbox, which is what makes codex ask for approval.
   */
  | { text?: string; shell: string; escalate?: boolean; usage?: TurnUsage }
  /**
   * The model calls another tool the CLI declared (an MCP server's): the first whose name ends with
   * `tool` (each CLI qualifies MCP tool names its own way), with this input.
   */
  | { text?: string; tool: string; input: Record<string, unknown>; usage?: TurnUsage }
  /** An HTTP error. It answers this request and every later one: CLIs retry, and the retries must fail too. */
  | { httpStatus: number; message?: string };

export interface RecordedRequest {
  dialect: Dialect;
  path: string;
  headers: IncomingHttpHeaders;
  body: any;
  /** Every tool output in the conversation the request carries, as text. */
  toolResults: string[];
  /** The scripted turn it was answered with; undefined when none was left (answered 500). */
  turn?: ModelTurn;
}

export interface ModelServer {
  /** http://127.0.0.1:<port>, without a trailing slash. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Replaces the script: the next model requests are answered with these turns, in order. */
  script(...turns: ModelTurn[]): void;
  /** Requests that found no scripted turn (answered 500); a scenario expects none. */
  unscripted(): RecordedRequest[];
  close(): Promise<void>;
}

const DEFAULT_USAGE: TurnUsage = { input: 100, output: 10 };

/** Each dialect's shell tool, as the CLI declares it in its requests. */
const SHELL_TOOL: Record<Dialect, string> = { anthropic: 'Bash', openai: 'exec_command', gemini: 'run_shell_command' };

export async function startModelServer(): Promise<ModelServer> {
  let turns: ModelTurn[] = [];
  const requests: RecordedRequest[] = [];

  const server = createServer((req, res) => {
    readBody(req)
      .then((text) => handle(req, res, text))
      .catch((err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(err));
      });
  });

  function handle(req: IncomingMessage, res: ServerResponse, text: string): void {
    const path = (req.url ?? '/').split('?')[0];
    const dialect = dialectOf(req.method ?? '', path);
    if (!dialect) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `model server: no route for ${req.method} ${path}` } }));
      return;
    }
    const body = text ? JSON.parse(text) : {};
    const turn = turns[0];
    // An error turn stays at the head of the script (see ModelTurn); any other is used once.
    if (turn && !('httpStatus' in turn)) turns.shift();
    requests.push({ dialect, path, headers: req.headers, body, toolResults: toolResults(dialect, body), turn });

    if (!turn) return sendError(res, dialect, 500, 'model server: no scripted turn left');
    if ('tool' in turn && !declaredTools(dialect, body).some((name) => name.endsWith(turn.tool))) {
      return sendError(res, dialect, 500, `model server: no declared tool ends with ${turn.tool}: ${declaredTools(dialect, body).join(', ')}`);
    }
    if ('httpStatus' in turn) return sendError(res, dialect, turn.httpStatus, turn.message ?? `scripted HTTP ${turn.httpStatus}`);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const model = dialect === 'gemini' ? decodeURIComponent(/models\/([^:]+):/.exec(path)?.[1] ?? 'gemini') : String(body.model ?? 'model');
    const call = toolCall(turn, dialect, body);
    const events = dialect === 'anthropic' ? anthropicEvents(turn, call, model) : dialect === 'openai' ? openaiEvents(turn, call, model) : geminiEvents(turn, call, model);
    for (const event of events) res.write(event);
    res.end();
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    script(...next) {
      turns = [...next];
    },
    unscripted: () => requests.filter((r) => r.turn === undefined),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A loopback URL nothing listens on: the port was free a moment ago and is closed again. */
export async function closedPortUrl(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

function dialectOf(method: string, path: string): Dialect | null {
  if (method !== 'POST') return null;
  if (path === '/v1/messages') return 'anthropic';
  if (path === '/v1/responses') return 'openai';
  if (/^\/v1beta\/models\/[^/]+:streamGenerateContent$/.test(path)) return 'gemini';
  return null;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sse(event: string | null, data: unknown): string {
  return `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;
}

/** The turn's text in two chunks, so the CLIs see a real stream of deltas. */
function chunks(text: string): string[] {
  const middle = Math.ceil(text.length / 2);
  return [text.slice(0, middle), text.slice(middle)].filter(Boolean);
}

/** A tool call the model makes: its name as the CLI declared it (and its namespace, if it declared one), and its input. */
interface ToolCall {
  name: string;
  namespace?: string;
  input: Record<string, unknown>;
}

/** The tool call of a turn in this dialect: the CLI's shell tool, or the declared tool a `tool` turn names. */
function toolCall(turn: ModelTurn, dialect: Dialect, body: any): ToolCall | null {
  if ('tool' in turn) {
    const declared = declaredTools(dialect, body).find((name) => name.endsWith(turn.tool))!;
    // A namespaced tool (codex declares an MCP server's tools as a `namespace`) is called by its own name in it.
    const [namespace, name] = declared.includes('/') ? declared.split('/') : [undefined, declared];
    return { name, ...(namespace && { namespace }), input: turn.input };
  }
  if (!('shell' in turn)) return null;
  if (dialect !== 'openai') return { name: SHELL_TOOL[dialect], input: { command: turn.shell, description: 'Run a shell command' } };
  return {
    name: SHELL_TOOL.openai,
    input: {
      cmd: turn.shell,
      ...(turn.escalate && { sandbox_permissions: 'require_escalated', justification: 'The command needs to run outside the sandbox' }),
    },
  };
}

/** The names of the tools a request declares to the model; a tool in a namespace as `<namespace>/<name>`. */
function declaredTools(dialect: Dialect, body: any): string[] {
  const tools: any[] = body.tools ?? [];
  if (dialect === 'gemini') return tools.flatMap((t) => (t.functionDeclarations ?? []).map((f: any) => String(f.name)));
  return tools.flatMap((t) => (t.type === 'namespace' ? (t.tools ?? []).map((f: any) => `${t.name}/${f.name}`) : [String(t.name ?? '')]));
}

function usageOf(turn: ModelTurn): TurnUsage {
  return ('usage' in turn && turn.usage) || DEFAULT_USAGE;
}

function textOf(turn: ModelTurn): string | undefined {
  return 'text' in turn ? turn.text : undefined;
}

const ERROR_NAMES: Record<Dialect, (status: number) => string> = {
  anthropic: (s) => (s === 401 ? 'authentication_error' : s === 429 ? 'rate_limit_error' : s === 529 ? 'overloaded_error' : s >= 500 ? 'api_error' : 'invalid_request_error'),
  openai: (s) => (s === 401 ? 'invalid_api_key' : s === 429 ? 'rate_limit_exceeded' : s >= 500 ? 'server_error' : 'invalid_request_error'),
  gemini: (s) => (s === 401 ? 'UNAUTHENTICATED' : s === 429 ? 'RESOURCE_EXHAUSTED' : s >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT'),
};

function sendError(res: ServerResponse, dialect: Dialect, status: number, message: string): void {
  const name = ERROR_NAMES[dialect](status);
  const body =
    dialect === 'anthropic'
      ? { type: 'error', error: { type: name, message } }
      : dialect === 'openai'
        ? { error: { message, type: name, code: name } }
        : { error: { code: status, message, status: name } };
  res.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${randomUUID()}` });
  res.end(JSON.stringify(body));
}

// ── Anthropic Messages (content blocks streamed as message_start … message_stop) ──────────────

function anthropicEvents(turn: ModelTurn, call: ToolCall | null, model: string): string[] {
  const usage = usageOf(turn);
  const id = `msg_${randomUUID().replaceAll('-', '')}`;
  const out = [
    sse('message_start', {
      type: 'message_start',
      message: {
        id,
        type: 'message',
        role: 'assistant',
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: usage.input, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 },
      },
    }),
  ];
  let index = 0;
  const text = textOf(turn);
  if (text) {
    out.push(sse('content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '' } }));
    for (const piece of chunks(text)) {
      out.push(sse('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text: piece } }));
    }
    out.push(sse('content_block_stop', { type: 'content_block_stop', index }));
    index += 1;
  }
  if (call) {
    const input = JSON.stringify(call.input);
    out.push(
      sse('content_block_start', {
        type: 'content_block_start',
        index,
        content_block: { type: 'tool_use', id: `toolu_${randomUUID().replaceAll('-', '')}`, name: call.name, input: {} },
      }),
      sse('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: input } }),
      sse('content_block_stop', { type: 'content_block_stop', index }),
    );
  }
  out.push(
    sse('message_delta', {
      type: 'message_delta',
      delta: { stop_reason: call ? 'tool_use' : 'end_turn', stop_sequence: null },
      usage: { output_tokens: usage.output },
    }),
    sse('message_stop', { type: 'message_stop' }),
  );
  return out;
}

// ── OpenAI Responses (output items streamed between response.created and response.completed) ──

function openaiEvents(turn: ModelTurn, call: ToolCall | null, model: string): string[] {
  const usage = usageOf(turn);
  const responseId = `resp_${randomUUID().replaceAll('-', '')}`;
  const items: Record<string, unknown>[] = [];
  const out: string[] = [];
  const response = (status: string, extra: Record<string, unknown> = {}) => ({
    id: responseId,
    object: 'response',
    created_at: Math.floor(Date.now() / 1000),
    model,
    status,
    output: items,
    ...extra,
  });
  out.push(sse('response.created', { type: 'response.created', response: response('in_progress') }));
  const text = textOf(turn);
  if (text) {
    const output_index = items.length;
    const item_id = `msg_${randomUUID().replaceAll('-', '')}`;
    out.push(
      sse('response.output_item.added', {
        type: 'response.output_item.added',
        output_index,
        item: { type: 'message', id: item_id, role: 'assistant', status: 'in_progress', content: [] },
      }),
      sse('response.content_part.added', {
        type: 'response.content_part.added',
        item_id,
        output_index,
        content_index: 0,
        part: { type: 'output_text', text: '', annotations: [] },
      }),
    );
    for (const delta of chunks(text)) {
      out.push(sse('response.output_text.delta', { type: 'response.output_text.delta', item_id, output_index, content_index: 0, delta }));
    }
    const done = { type: 'message', id: item_id, role: 'assistant', status: 'completed', content: [{ type: 'output_text', text, annotations: [] }] };
    items.push(done);
    out.push(
      sse('response.output_text.done', { type: 'response.output_text.done', item_id, output_index, content_index: 0, text }),
      sse('response.output_item.done', { type: 'response.output_item.done', output_index, item: done }),
    );
  }
  if (call) {
    const output_index = items.length;
    const args = JSON.stringify(call.input);
    const item = {
      type: 'function_call',
      id: `fc_${randomUUID().replaceAll('-', '')}`,
      call_id: `call_${randomUUID().replaceAll('-', '')}`,
      name: call.name,
      ...(call.namespace && { namespace: call.namespace }),
    };
    out.push(
      sse('response.output_item.added', { type: 'response.output_item.added', output_index, item: { ...item, arguments: '', status: 'in_progress' } }),
      sse('response.function_call_arguments.delta', { type: 'response.function_call_arguments.delta', item_id: item.id, output_index, delta: args }),
      sse('response.function_call_arguments.done', { type: 'response.function_call_arguments.done', item_id: item.id, output_index, arguments: args }),
    );
    const done = { ...item, arguments: args, status: 'completed' };
    items.push(done);
    out.push(sse('response.output_item.done', { type: 'response.output_item.done', output_index, item: done }));
  }
  out.push(
    sse('response.completed', {
      type: 'response.completed',
      response: response('completed', {
        usage: {
          input_tokens: usage.input,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: usage.output,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: usage.input + usage.output,
        },
      }),
    }),
  );
  return out;
}

// ── Gemini (GenerateContentResponse chunks, `data:` lines only) ───────────────────────────────

function geminiEvents(turn: ModelTurn, call: ToolCall | null, model: string): string[] {
  const usage = usageOf(turn);
  const chunk = (parts: unknown[], last: boolean) => ({
    candidates: [{ content: { role: 'model', parts }, index: 0, ...(last && { finishReason: 'STOP' }) }],
    ...(last && {
      usageMetadata: { promptTokenCount: usage.input, candidatesTokenCount: usage.output, totalTokenCount: usage.input + usage.output },
    }),
    modelVersion: model,
    responseId: randomUUID(),
  });
  const parts: unknown[][] = (textOf(turn) ? chunks(textOf(turn) ?? '') : []).map((text) => [{ text }]);
  if (call) parts.push([{ functionCall: { name: call.name, args: call.input } }]);
  return parts.map((p, i) => sse(null, chunk(p, i === parts.length - 1)));
}

// ── What came back to the model ───────────────────────────────────────────────────────────────

function toolResults(dialect: Dialect, body: any): string[] {
  const asText = (value: unknown): string =>
    typeof value === 'string'
      ? value
      : Array.isArray(value)
        ? value.map((part: any) => (typeof part?.text === 'string' ? part.text : JSON.stringify(part))).join('')
        : JSON.stringify(value);
  if (dialect === 'anthropic') {
    return (body.messages ?? []).flatMap((m: any) =>
      Array.isArray(m.content) ? m.content.filter((b: any) => b.type === 'tool_result').map((b: any) => asText(b.content)) : [],
    );
  }
  if (dialect === 'openai') {
    return (body.input ?? []).filter((i: any) => i.type === 'function_call_output').map((i: any) => asText(i.output));
  }
  return (body.contents ?? []).flatMap((c: any) =>
    (c.parts ?? []).filter((p: any) => p.functionResponse).map((p: any) => asText(p.functionResponse.response)),
  );
}
