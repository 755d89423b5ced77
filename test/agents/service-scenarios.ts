import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentName } from '../../scripts/install-agents.js';
import { programsUnder } from '../faults/processes.js';
import { stopProcessesWith, untilRunning, useServiceRig, type AgentRig, type FinishedRun, type LiveRun, type ModelContext } from './harness.js';
import { closedPortUrl, type RecordedRequest } from './model-server.js';

/**
 * The through-the-service scenarios of every provider (claude, codex, gemini): the same model turns
 * as the direct CLI tests (codex-cli.test.ts, gemini-cli.test.ts), asserted against the service's
 * event contract (src/schemas/events.ts, docs/protocols.md). What differs by provider is a knob; a
 * provider's stricter assertions (claude's exact event sequences) come in as `checks`.
 */

export interface ProviderKnobs {
  /** Fields of every session (gemini: an explicit model, so its auto-router makes no extra calls). */
  session: Record<string, unknown>;
  /** The event kind the model's text arrives as: gemini's headless stream only has deltas (docs/protocols.md, "## Gemini CLI"). */
  textKind: 'assistant_message' | 'assistant_delta';
  /** Session fields for a run that may use the shell without asking (gemini needs yolo). */
  shellSession: Record<string, unknown>;
  /**
   * How the provider gets a human decision: codex asks (app-server); gemini cannot ask at all; codex
   * on the SDK lane (exec, approval policy never) refuses what it would have asked about.
   */
  approvals: 'asks' | 'cannot_ask' | 'refuses';
  /** The terminal error kind when the model server is down, and session fields for that run. */
  down: { kind: string; session: Record<string, unknown> };
  /** The backend lane every session asks for; the scenarios check the runs report it. Default: auto. */
  lane?: 'core' | 'sdk';
  /** The sdk_runtime the SDK lane reports, when the test pins it. Default: any `<package>@<version>`. */
  sdkRuntime?: string;
  /**
   * The slow tool of the interrupt scenario: the shell command, a marker of its command line, and
   * whether the provider asks before running it (it is then allowed). Default: `sleep 4x.5`, not asked.
   */
  slowTool?: { shell: string; marker: string; asks: boolean };
  /** Claude may call the model again after an HTTP error; the others call it exactly once. Default: once. */
  httpErrorCalls?: 'once' | 'at least once';
  checks?: ProviderChecks;
}

/**
 * A provider's own assertions in a shared scenario, run as soon as the run has ended and before the
 * shared ones (being the stricter, they fail with the more telling message). `requests` are what
 * the model server received during the scenario.
 */
export interface ProviderChecks {
  plain?(outcome: FinishedRun, requests: RecordedRequest[]): void;
  continued?(first: FinishedRun, second: FinishedRun, requests: RecordedRequest[]): void;
  shell?(outcome: FinishedRun, requests: RecordedRequest[]): void;
  approval?(decision: 'allow' | 'deny', outcome: FinishedRun, requests: RecordedRequest[]): void;
  interrupted?(outcome: FinishedRun, requests: RecordedRequest[]): Promise<void>;
  httpError?(status: number, kind: string, outcome: FinishedRun, requests: RecordedRequest[]): void;
  down?(outcome: FinishedRun, requests: RecordedRequest[]): void;
}

/** The approval scenario's two decisions: what the model does, and what the person answers. */
const DECISIONS = [
  { decision: 'allow', file: 'approved.txt', reply: 'Created approved.txt.', created: true },
  { decision: 'deny', file: 'denied.txt', reply: 'I was not allowed to.', created: false, reason: 'not in this repo' },
] as const;

export function describeThroughService(name: AgentName, knobs: ProviderKnobs): void {
  describe(`${name} (real CLI) through the service${knobs.lane ? `, lane ${knobs.lane}` : ''}`, () => {
    const ctx = useServiceRig(name);
    const rig = ctx.rig;
    const markers: string[] = [];
    const checks = knobs.checks ?? {};
    // What each explicitly requested lane reports in the run's metadata.
    const laneMetadata = {
      core: { requested_lane: 'core', lane: 'core', backend: 'core', lane_reason: 'explicit_core', sdk_runtime: null },
      sdk: { requested_lane: 'sdk', lane: 'sdk', backend: 'sdk', lane_reason: 'explicit_sdk', sdk_runtime: knobs.sdkRuntime ?? expect.stringMatching(/@\d/) },
    };

    const session = (extra: Record<string, unknown> = {}) =>
      rig.session({ ...knobs.session, ...(knobs.lane && { lane: knobs.lane }), ...extra });
    const expectLane = (run: any, events: any[]) => {
      if (!knobs.lane) return;
      expect(run.result.metadata).toMatchObject(laneMetadata[knobs.lane]);
      for (const event of events) expect(event.metadata).toMatchObject(laneMetadata[knobs.lane]);
    };

    // A CLI that orphans its tool's process group (gemini 0.61 does) must not leak it past the test.
    afterEach(() => {
      for (const marker of markers.splice(0)) stopProcessesWith(marker);
    });

    it('answers a plain prompt: text and usage from the model', async () => {
      ctx.model.script({ text: 'Hello from the model.', usage: { input: 120, output: 8 } });
      const outcome = await rig.run(await session(), 'Say hello');
      checks.plain?.(outcome, ctx.model.requests);
      const { run, kinds, events } = outcome;
      expectInOrder(kinds, ['run_queued', 'run_started', knobs.textKind, 'result']);
      expect(run.state).toBe('completed');
      expect(run.result.text).toBe('Hello from the model.');
      expect(run.result.usage).toMatchObject({ input_tokens: 120, output_tokens: 8 });
      expect(ctx.model.requests).toHaveLength(1);
      expectLane(run, events);
    });

    it('continues the conversation: the second run resumes the first one\'s session, usage per run', async () => {
      ctx.model.script({ text: 'First answer.', usage: { input: 120, output: 8 } }, { text: 'Second answer.', usage: { input: 300, output: 5 } });
      const s = await session();
      const first = await rig.run(s, 'First question');
      const second = await rig.run(s, 'Second question');
      checks.continued?.(first, second, ctx.model.requests);
      const sessionIdOf = (r: typeof first) => r.terminal.payload.provider_session_id;
      expect(sessionIdOf(first)).toEqual(expect.any(String));
      expect(sessionIdOf(second)).toBe(sessionIdOf(first));
      expect(second.run.state).toBe('completed');
      expect(second.run.result.text).toBe('Second answer.');
      expect(second.run.result.provider_session_id).toBe(sessionIdOf(first));
      // The CLI reports the thread's cumulative usage: each run reports its own share.
      expect(second.run.result.usage).toMatchObject({ input_tokens: 300, output_tokens: 5 });
      // The model saw the first exchange again: the thread was resumed, not started afresh.
      const history = JSON.stringify(ctx.model.requests[1].body);
      expect(history).toContain('First question');
      expect(history).toContain('First answer.');
      expectLane(second.run, second.events);
    });

    it('runs a shell tool call and sends its output back to the model', async () => {
      ctx.model.script(
        { text: 'Running it.', shell: 'echo hello-from-shell', usage: { input: 120, output: 7 } },
        { text: 'It printed hello-from-shell.', usage: { input: 200, output: 9 } },
      );
      const outcome = await rig.run(await session(knobs.shellSession), 'Run echo hello-from-shell');
      checks.shell?.(outcome, ctx.model.requests);
      const { run, kinds, events } = outcome;
      expectInOrder(kinds, ['run_queued', 'run_started', 'tool_use', 'tool_result', knobs.textKind, 'result']);
      const toolUse = events.find((e) => e.kind === 'tool_use');
      const toolResult = events.find((e) => e.kind === 'tool_result');
      expect(toolResult.payload).toMatchObject({ tool_call_id: toolUse.payload.tool_call_id, is_error: false });
      expect(JSON.stringify(toolResult.payload.content)).toContain('hello-from-shell');
      expect(ctx.model.requests[1].toolResults.join('')).toContain('hello-from-shell');
      expect(run.state).toBe('completed');
      expect(run.result.text).toContain('It printed hello-from-shell.');
      expect(run.result.usage).toMatchObject({ input_tokens: 320, output_tokens: 16 });
    });

    it('runs its shell tool in the sandbox: no process, environment or file of the service in sight', async () => {
      // Set after the service started: the service reads its environment when it starts a CLI.
      const secret = `asm-secret-${Math.random().toString(36).slice(2)}`;
      process.env.ASM_API_KEYS = `${secret}:tenant`;
      try {
        const look = 'cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ | tr "\\0" "\\n"; ls /proc | grep -c "^[0-9]"; ls -A /run 2>&1 | sed "s/^/in-r""un: /"';
        ctx.model.script({ text: 'Looking around.', shell: look }, { text: 'Done looking.' });
        // A CLI that asks before running it is allowed to (an approval that never comes is not awaited).
        const allowIfAsked = async (live: LiveRun) => {
          void live.event('approval_requested').then(
            (requested) => rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' }),
            () => undefined,
          );
        };
        const { run } = await rig.run(await session(knobs.shellSession), 'Look around', allowIfAsked);
        expect(run.state).toBe('completed');
        const seen = ctx.model.requests[1].toolResults.join('');
        expect(seen).not.toContain(secret);
        expect(seen).not.toContain('vitest');
        // The sandbox's /run holds its init program alone (native/sandbox-init.c), none of the host's sockets.
        expect(seen.match(/in-run: [\w.-]+/g)).toEqual(['in-run: asm-init']);
      } finally {
        delete process.env.ASM_API_KEYS;
      }
    });

    if (knobs.approvals === 'asks') {
      it.each(DECISIONS)('asks for approval of a write; $decision', async ({ decision, file, reply, created, ...answer }) => {
        ctx.model.script({ text: 'Creating it.', shell: `touch ${file}`, escalate: true }, { text: reply });
        const s = await session();
        const outcome = await rig.run(s, `Create ${file}`, async (live) => {
          const requested = await live.event('approval_requested');
          expect(JSON.stringify(requested.payload.details.tool_input)).toContain(`touch ${file}`);
          const decided = await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision, ...answer });
          expect(decided.status).toBe(200);
        });
        checks.approval?.(decision, outcome, ctx.model.requests);
        const { run, kinds, events } = outcome;
        expectInOrder(kinds, ['run_started', 'approval_requested', 'approval_resolved', 'result']);
        expect(existsSync(join(s.cwd, file))).toBe(created);
        // The run's diff, computed by the service around the CLI, has the file the agent wrote, and only it.
        const diff = await rig.server.request('GET', `/v1/runs/${run.id}/diff`);
        expect(diff.body.summary.files.map((f: { path: string }) => f.path)).toEqual(created ? [file] : []);
        expect(ctx.model.requests).toHaveLength(2);
        expect(run.state).toBe('completed');
        expectLane(run, events);
      });
    } else if (knobs.approvals === 'refuses') {
      it('cannot ask: an escalated command is refused, not asked, and the run goes on', async () => {
        ctx.model.script({ text: 'Creating it.', shell: 'touch escalated.txt', escalate: true }, { text: 'I could not.' });
        const s = await session();
        const { run, kinds, events } = await rig.run(s, 'Create escalated.txt');
        expect(kinds).not.toContain('approval_requested');
        expect(existsSync(join(s.cwd, 'escalated.txt'))).toBe(false);
        expect(ctx.model.requests).toHaveLength(2);
        expect(run.state).toBe('completed');
        expectLane(run, events);
      });
    } else {
      it('cannot ask: with the shell allowed up front the write runs', async () => {
        ctx.model.script({ text: 'Creating it.', shell: 'touch allowed.txt' }, { text: 'Done.' });
        const s = await session(knobs.shellSession);
        const { run, kinds } = await rig.run(s, 'Create allowed.txt');
        expect(kinds).not.toContain('approval_requested');
        expect(existsSync(join(s.cwd, 'allowed.txt'))).toBe(true);
        expect(run.state).toBe('completed');
      });

      it('cannot ask: in the default mode the write is refused and the model hears so', async () => {
        ctx.model.script({ text: 'Creating it.', shell: 'touch refused.txt' }, { text: 'I could not.' });
        const s = await session();
        const { run, kinds, events } = await rig.run(s, 'Create refused.txt');
        expect(kinds).not.toContain('approval_requested');
        expect(events.find((e) => e.kind === 'tool_result').payload.is_error).toBe(true);
        expect(existsSync(join(s.cwd, 'refused.txt'))).toBe(false);
        expect(ctx.model.requests[1].toolResults).toHaveLength(1);
        expect(run.state).toBe('completed');
      });
    }

    it('interrupts a run in the middle of a slow tool: the run ends user_cancelled', async () => {
      const sleep = `sleep ${name === 'codex' ? 46.5 : 45.5}`;
      const tool = knobs.slowTool ?? { shell: sleep, marker: sleep, asks: false };
      markers.push(tool.marker);
      ctx.model.script({ text: 'Starting the slow job.', shell: tool.shell }, { text: 'never sent' });
      const outcome = await rig.run(await session(knobs.shellSession), 'Run the slow job', async (live) => {
        await live.event('tool_use');
        if (tool.asks) {
          const requested = await live.event('approval_requested');
          await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' });
        }
        await untilRunning(tool.marker);
        expect((await rig.server.request('POST', `/v1/runs/${live.runId}/interrupt`)).status).toBe(202);
      });
      await checks.interrupted?.(outcome, ctx.model.requests);
      const { run, kinds, events, terminal } = outcome;
      expectInOrder(kinds, ['run_started', 'tool_use', 'error']);
      expectLane(run, events);
      expect(terminal.payload.kind).toBe('user_cancelled');
      expect(run.state).toBe('interrupted');
      expect(ctx.model.requests).toHaveLength(1);
    });

    it.each([
      [401, 'auth_error'],
      [429, 'rate_limit'],
      [500, 'provider_error'],
    ])('fails a run whose model answers HTTP %i with %s', async (status, kind) => {
      ctx.model.script({ httpStatus: status, message: `scripted ${status}` });
      const outcome = await rig.run(await session(), 'Say hello');
      checks.httpError?.(status, kind, outcome, ctx.model.requests);
      const { run, kinds, events, terminal } = outcome;
      expectInOrder(kinds, ['run_queued', 'run_started', 'error']);
      expectLane(run, events);
      expect(terminal.payload.kind).toBe(kind);
      expect(run.state).toBe('failed');
      if (knobs.httpErrorCalls === 'at least once') expect(ctx.model.requests.length).toBeGreaterThan(0);
      else expect(ctx.model.requests).toHaveLength(1);
    });

    it(`fails a run whose model server is down with ${knobs.down.kind}`, async () => {
      rig.pointAt(await closedPortUrl());
      const outcome = await rig.run(await session(knobs.down.session), 'Say hello');
      checks.down?.(outcome, ctx.model.requests);
      const { run, kinds, terminal } = outcome;
      expectInOrder(kinds, ['run_queued', 'run_started', 'error']);
      expect(terminal.payload.kind).toBe(knobs.down.kind);
      expect(run.state).toBe('failed');
      expect(ctx.model.requests).toHaveLength(0);
    });
  });
}

/** `expected` occurs in `kinds` in this order (other kinds may come between), and the last one ends it. */
function expectInOrder(kinds: string[], expected: string[]): void {
  let at = 0;
  for (const kind of kinds) if (kind === expected[at]) at += 1;
  expect(at, `${JSON.stringify(expected)} in order within ${JSON.stringify(kinds)}`).toBe(expected.length);
  expect(kinds.at(-1)).toBe(expected.at(-1));
}

/** The payload of a finished run's run_started event. */
export const startedOf = (r: FinishedRun) => r.events.find((e) => e.kind === 'run_started').payload;

/** The live codex process a run started (`pid`, its run_started's) is the native binary running `subcommand`, with no Node launcher in its tree (src/providers/codex/native.ts). */
export function expectNativeCodex(pid: number, subcommand: string): void {
  const programs = programsUnder(pid);
  expect(programs.filter((program) => new RegExp(`/vendor/[^ ]+/bin/codex ${subcommand}$`).test(program))).toHaveLength(1);
  expect(programs.filter((program) => basename(program.split(' ')[0]!) === 'node')).toEqual([]);
}

/**
 * The warm-session scenario every provider with `warm` shares: two scripted turns on one warm session
 * complete on the same process (same pid, `warm: true`), with the second answer and usage per run.
 * Returns both runs for a provider's stricter checks (its history, its session id, its event kinds);
 * `session`: more fields of the session (gemini's explicit model).
 */
export async function twoWarmRuns(ctx: ModelContext & { rig: AgentRig }, session: Record<string, unknown> = {}): Promise<{ first: FinishedRun; second: FinishedRun }> {
  ctx.model.script({ text: 'First answer.', usage: { input: 120, output: 8 } }, { text: 'Second answer.', usage: { input: 300, output: 5 } });
  const s = await ctx.rig.session({ lane: 'core', warm: true, ...session });
  const first = await ctx.rig.run(s, 'First question');
  const second = await ctx.rig.run(s, 'Second question');
  expect(first.run.state).toBe('completed');
  expect(second.run.state).toBe('completed');
  expect(startedOf(second)).toMatchObject({ pid: startedOf(first).pid, warm: true });
  expect(second.run.result.text).toBe('Second answer.');
  expect(first.run.result.usage).toMatchObject({ input_tokens: 120, output_tokens: 8 });
  expect(second.run.result.usage).toMatchObject({ input_tokens: 300, output_tokens: 5 });
  return { first, second };
}
