import { describe, expect, it } from 'vitest';
import { useServiceRig } from './harness.js';
import { describeThroughService } from './service-scenarios.js';

/**
 * Codex on the SDK lane: @openai/codex-sdk driving the same pinned CLI (`codex exec
 * --experimental-json`), through the service, with the scenarios and assertions of the core lane
 * (codex.test.ts). exec cannot ask, so the approval scenario is the refusal of a write; and the
 * modes that ask need approvals, which this lane lacks (lane: sdk with them is 400), so the sessions
 * are in plan mode: a read-only sandbox where nothing asks.
 */
describeThroughService('codex', {
  session: { permission_mode: 'plan' },
  textKind: 'assistant_message',
  shellSession: {},
  approvals: 'refuses',
  down: { kind: 'timeout', session: { run_deadline_ms: 8_000 } },
  lane: 'sdk',
});

/**
 * The SDK runs `codex exec`, so its events must be exactly those of the core lane's exec transport
 * (permission_mode bypass): the same scenario on both lanes, compared event by event.
 */
describe('codex, SDK lane against the core lane\'s exec transport', () => {
  const ctx = useServiceRig('codex');

  /** An event's kind and the payload fields that do not differ by run (ids, pids, durations do). */
  function essentials(events: any[]): unknown[] {
    return events
      .filter((e) => e.kind !== 'stderr')
      .map(({ kind, payload }) => {
        switch (kind) {
          case 'assistant_message':
            return { kind, content: payload.content };
          case 'tool_use':
            return { kind, tool_name: payload.tool_name, tool_call_id: payload.tool_call_id, input: payload.input };
          case 'tool_result':
            return { kind, tool_call_id: payload.tool_call_id, content: payload.content, is_error: payload.is_error, exit_code: payload.exit_code };
          case 'result':
            return { kind, status: payload.status, stop_reason: payload.stop_reason, usage: payload.usage };
          case 'error':
            return { kind, error_kind: payload.kind };
          default:
            return { kind };
        }
      });
  }

  async function onBothLanes(prompt: string, turns: () => void): Promise<Record<'core' | 'sdk', unknown[]>> {
    const out = {} as Record<'core' | 'sdk', unknown[]>;
    for (const lane of ['core', 'sdk'] as const) {
      turns();
      const { events } = await ctx.rig.run(await ctx.rig.session({ lane, permission_mode: 'bypass' }), prompt);
      out[lane] = essentials(events);
    }
    return out;
  }

  it('plain text and a shell tool call: the same events', async () => {
    const { core, sdk } = await onBothLanes('Run echo hello-from-shell', () =>
      ctx.model.script(
        { text: 'Running it.', shell: 'echo hello-from-shell', usage: { input: 120, output: 7 } },
        { text: 'It printed hello-from-shell.', usage: { input: 200, output: 9 } },
      ),
    );
    expect(core.map((e: any) => e.kind)).toContain('tool_result');
    expect(sdk).toEqual(core);
  });

  it('an HTTP 401 from the model: the same events', async () => {
    const { core, sdk } = await onBothLanes('Say hello', () => ctx.model.script({ httpStatus: 401, message: 'scripted 401' }));
    expect(core.at(-1)).toEqual({ kind: 'error', error_kind: 'auth_error' });
    expect(sdk).toEqual(core);
  });
});
