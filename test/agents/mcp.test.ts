import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentName } from '../../scripts/install-agents.js';
import { FIXTURES } from '../helpers/sandbox.js';
import { AgentRig, GEMINI_MODEL, type FinishedRun, type LiveRun } from './harness.js';
import { startModelServer, type ModelServer } from './model-server.js';

/**
 * MCP servers per session with the real CLIs (README "MCP servers"): each session is given a real
 * stdio MCP server (test/fixtures/mcp/shout-server.mjs, @modelcontextprotocol/sdk), the loopback
 * model calls its `shout` tool, and the tool's answer must reach the model. The server is the CLI's
 * child, so it runs in the session's sandbox: its node_modules are shown to the sandbox read-only,
 * and where the service is root it runs as the sandbox's account (the uid it reports is not 0).
 * The prefix it prints comes from the session's `env` for it, which reaches it through each CLI's own
 * configuration (a file for claude and gemini, codex's environment).
 */

const SHOUT_SERVER = fileURLToPath(new URL('../fixtures/mcp/shout-server.mjs', import.meta.url));
const NODE_MODULES = fileURLToPath(new URL('../../node_modules', import.meta.url));
const PREFIX = 'from-session-env';
const MCP_SERVERS = { shouter: { command: realpathSync(process.execPath), args: [SHOUT_SERVER], env: { SHOUT_PREFIX: PREFIX } } };
const ANSWER = `${PREFIX}: PING`;

interface Case {
  name: AgentName;
  lane: 'core' | 'sdk';
  /** Variables the CLI needs besides the offline ones. */
  cliEnv?: Record<string, string>;
  /** Session options besides the servers: a mode in which the CLI may run the tool. */
  session: Record<string, unknown>;
  /** What to do while the run is live (answer the approval of the MCP tool). */
  during?: (rig: AgentRig, live: LiveRun) => Promise<void>;
  /** The tool's name as the CLI's events report it. */
  toolName: RegExp;
}

/** The tool is approved like any tool: the CLI asks, the approval is answered over the API. */
async function allowTheTool(rig: AgentRig, live: LiveRun): Promise<void> {
  const requested = await live.event('approval_requested');
  expect(requested.payload.subject).toBe('mcp__shouter__shout');
  const decided = await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' });
  expect(decided.status).toBe(200);
}

/**
 * Claude Code defers MCP tools behind its ToolSearch tool (the model would have to search for them
 * first); without it, every tool is declared to the model up front.
 */
const CLAUDE_ENV = { ENABLE_TOOL_SEARCH: 'false' };

const CASES: Case[] = [
  // default mode: claude asks before an MCP tool like before any other, and the approval is answered.
  ...(['core', 'sdk'] as const).map((lane): Case => ({ name: 'claude', lane, cliEnv: CLAUDE_ENV, session: {}, during: allowTheTool, toolName: /^mcp__shouter__shout$/ })),
  // A model outside codex's catalog: for the models in it codex defers MCP tools behind its
  // tool_search tool, which the model would have to call first. codex asks before an MCP tool call
  // (app-server: an elicitation, answered as an approval); exec cannot ask, so the SDK lane runs in
  // the mode that needs no approval.
  { name: 'codex', lane: 'core', session: { model: 'asm-test-model' }, during: allowTheTool, toolName: /^mcp__shouter__shout$/ },
  { name: 'codex', lane: 'sdk', session: { model: 'asm-test-model', permission_mode: 'bypass' }, toolName: /^mcp__shouter__shout$/ },
  // gemini cannot ask headless: yolo lets the tool run.
  { name: 'gemini', lane: 'core', session: { permission_mode: 'yolo', model: GEMINI_MODEL }, toolName: /^mcp_shouter_shout$/ },
];

for (const { name, lane, cliEnv, session: options, during, toolName } of CASES) {
  describe(`${name} (${lane} lane): a tool of the session's MCP server`, () => {
    let model: ModelServer;
    const rig = new AgentRig(name);

    beforeAll(async () => {
      model = await startModelServer();
      await rig.start(model, { ASM_SANDBOX_READ_ONLY: `${FIXTURES},${NODE_MODULES}` }, cliEnv);
    });
    afterAll(async () => {
      await rig.stop();
      await model.close();
    });

    it('is called, and its answer reaches the model', async () => {
      model.script({ text: 'Asking the server.', tool: 'shout', input: { text: 'ping' } }, { text: 'It shouted back.' });
      const session = await rig.session({ mcp_servers: MCP_SERVERS, lane, ...options });
      const finished: FinishedRun = await rig.run(session, 'Shout ping with the shouter server.', during && ((live) => during(rig, live)), 90_000);

      expect(model.unscripted()).toEqual([]);
      expect(finished.run.state, JSON.stringify(finished.terminal)).toBe('completed');
      expect(finished.terminal.metadata.lane).toBe(lane);
      const toolUse = finished.events.find((e) => e.kind === 'tool_use');
      expect(toolUse.payload.tool_name).toMatch(toolName);
      const toolResult = finished.events.find((e) => e.kind === 'tool_result' && e.payload.tool_call_id === toolUse.payload.tool_call_id);
      expect(toolResult.payload.is_error).toBe(false);
      expect(JSON.stringify(toolResult.payload.content)).toContain(ANSWER);
      // The second model request carries the tool's answer back.
      const returned = model.requests[1].toolResults.join('\n');
      expect(returned).toContain(ANSWER);
      const uid = Number(/\(uid (\d+)\)/.exec(returned)?.[1]);
      if (process.getuid!() === 0) expect(uid).not.toBe(0);
    });
  });
}
