import { describeThroughService } from './service-scenarios.js';

/**
 * Codex on the SDK lane: @openai/codex-sdk driving the same pinned CLI (`codex exec
 * --experimental-json`), through the service, with the scenarios and assertions of the core lane
 * (codex.test.ts). exec cannot ask, so the approval scenario is the refusal of an escalated command.
 */
describeThroughService('codex', {
  session: {},
  textKind: 'assistant_message',
  shellSession: {},
  approvals: 'refuses',
  down: { kind: 'timeout', session: { run_deadline_ms: 8_000 } },
  lane: 'sdk',
  continuation: true,
});
