import { expect } from 'vitest';
import { untilGone, type FinishedRun } from './harness.js';
import type { RecordedRequest } from './model-server.js';
import { describeThroughService, type ProviderChecks } from './service-scenarios.js';

/**
 * The real Claude Code CLI (pinned in scripts/install-agents.ts) run by the service, against the
 * loopback model server: the shared scenarios (service-scenarios.ts), held to claude's exact event
 * sequences. Every scenario runs on both backend lanes with the same assertions, so the SDK lane is
 * held to exactly the events of the core lane:
 *
 *   core  the core backend spawning `claude -p --input-format stream-json …`
 *   sdk   the SDK backend: @anthropic-ai/claude-agent-sdk's query() driving the same pinned CLI
 */

/** The text of the newest user message the model received. */
function lastUserText(body: any): string {
  const user = [...body.messages].reverse().find((m: any) => m.role === 'user');
  return (typeof user.content === 'string' ? [{ text: user.content }] : user.content).map((b: any) => b.text ?? '').join('');
}

const find = (events: any[], kind: string) => events.find((e) => e.kind === kind);

const APPROVAL_KINDS = [
  'run_queued', 'run_started', 'assistant_message', 'tool_use', 'approval_requested', 'approval_resolved',
  'tool_result', 'assistant_message', 'cost_update', 'result',
];

/**
 * Claude refuses a standalone `sleep` ("use Monitor"), so the slow tool is a node one-liner, which
 * is not read-only and so needs an approval first.
 */
const SLOW_MARKER = 'setTimeout(() => {}, 47500)';

/** Whether claude reports a model's HTTP error as retryable. */
const RETRYABLE: Record<number, boolean> = { 401: false, 429: true, 500: true };

function claudeChecks(lane: 'core' | 'sdk'): ProviderChecks {
  return {
    plain({ run, kinds }: FinishedRun, requests: RecordedRequest[]) {
      expect(kinds).toEqual(['run_queued', 'run_started', 'assistant_message', 'cost_update', 'result']);
      expect(run.result.cost_usd).toBeGreaterThan(0);
      expect(lastUserText(requests[0].body)).toContain('Say hello');
      expect(requests[0].headers['x-api-key']).toBe('test-key');
      // The same pinned CLI on both lanes; on the SDK lane the Agent SDK started it.
      expect(requests[0].headers['user-agent']).toContain(lane === 'sdk' ? 'claude-cli/2.1.329 (external, sdk-ts, agent-sdk/0.3.329)' : 'claude-cli/2.1.329');
    },

    continued(first, second, requests) {
      // The id is known from the start: claude is told it (--session-id, then --resume).
      const started = (r: FinishedRun) => find(r.events, 'run_started').payload.provider_session_id;
      expect(started(first)).toEqual(expect.any(String));
      expect(started(second)).toBe(started(first));
      expect(second.kinds).toEqual(['run_queued', 'run_started', 'assistant_message', 'cost_update', 'result']);
      // claude reports cumulative totals across --resume: each run reports its own share.
      expect(first.run.result.usage).toMatchObject({ input_tokens: 120, output_tokens: 8 });
      const history = JSON.stringify(requests[1].body.messages);
      expect(history).toContain('First question');
      expect(history).toContain('First answer.');
    },

    shell({ run, kinds, events }, requests) {
      expect(kinds).toEqual([
        'run_queued', 'run_started', 'assistant_message', 'tool_use', 'tool_result', 'assistant_message', 'cost_update', 'result',
      ]);
      expect(find(events, 'tool_use').payload).toMatchObject({ tool_name: 'Bash', input: { command: 'echo hello-from-shell' } });
      expect(requests.map((r) => r.toolResults)).toEqual([[], ['hello-from-shell']]);
      expect(run.result.text).toBe('Running it.\nIt printed hello-from-shell.');
    },

    approval(decision, { run, kinds, events }, requests) {
      // The allowed command created a file: the run's diff says so, just before the terminal event.
      expect(kinds).toEqual(decision === 'allow' ? [...APPROVAL_KINDS.slice(0, -1), 'workspace_diff', 'result'] : APPROVAL_KINDS);
      if (decision === 'allow') {
        expect(find(events, 'workspace_diff').payload).toMatchObject({ files: [{ path: 'approved.txt', status: 'added', binary: false }], changed_files: 1 });
        expect(find(events, 'approval_requested').payload).toMatchObject({ subject: 'Bash', details: { tool_input: { command: 'touch approved.txt' } } });
        expect(find(events, 'tool_result').payload.is_error).toBe(false);
        expect(requests[1].toolResults).toHaveLength(1);
        expect(run.result.text).toBe('Creating it.\nCreated approved.txt.');
      } else {
        expect(find(events, 'approval_resolved').payload).toMatchObject({ decision: 'deny', reason: 'not in this repo' });
        expect(find(events, 'tool_result').payload.is_error).toBe(true);
        // The model hears why.
        expect(requests[1].toolResults.join('')).toContain('not in this repo');
        expect(run.result.text).toBe('Creating it.\nI was not allowed to.');
      }
    },

    async interrupted({ run, kinds, events, terminal }) {
      expect(kinds).toEqual([
        'run_queued', 'run_started', 'assistant_message', 'tool_use', 'approval_requested', 'approval_resolved',
        'tool_result', 'user_message', 'cost_update', 'error',
      ]);
      // The CLI reports the stopped tool as an error result and the turn as interrupted.
      expect(find(events, 'tool_result').payload.is_error).toBe(true);
      expect(find(events, 'user_message').payload.content).toContain('interrupted');
      expect(terminal.payload).toMatchObject({ kind: 'user_cancelled' });
      expect(run.result.error.kind).toBe('user_cancelled');
      // The tool is stopped (the shared scenario then checks the model was not asked again).
      await untilGone(SLOW_MARKER);
    },

    httpError(status, kind, { run, kinds, terminal }) {
      expect(kinds).toEqual(['run_queued', 'run_started', 'raw', 'cost_update', 'error']);
      expect(terminal.payload).toMatchObject({ kind, api_error_status: status });
      expect(terminal.payload.retryable).toBe(RETRYABLE[status]);
      expect(terminal.payload.message).toContain(`scripted ${status}`);
      expect(run.result.error.kind).toBe(kind);
    },

    down({ kinds }) {
      expect(kinds).toEqual(['run_queued', 'run_started', 'raw', 'cost_update', 'error']);
    },
  };
}

for (const lane of ['core', 'sdk'] as const) {
  describeThroughService('claude', {
    session: {},
    textKind: 'assistant_message',
    shellSession: {},
    approvals: 'asks',
    down: { kind: 'connection_failed', session: {} },
    lane,
    sdkRuntime: '@anthropic-ai/claude-agent-sdk@0.3.329',
    slowTool: { shell: `node -e '${SLOW_MARKER}'`, marker: SLOW_MARKER, asks: true },
    httpErrorCalls: 'at least once',
    checks: claudeChecks(lane),
  });
}
