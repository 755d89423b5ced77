import { describeThroughService } from './service-scenarios.js';

/**
 * Codex through the service (`codex app-server`, which can ask for approval), against the model
 * server. A refused connection is retried by codex 0.169 forever ("Reconnecting... waiting for
 * network", see codex-cli.test.ts), so that run ends by its deadline.
 */
describeThroughService('codex', {
  session: {},
  textKind: 'assistant_message',
  shellSession: {},
  approvals: 'asks',
  down: { kind: 'timeout', session: { run_deadline_ms: 8_000 } },
  lane: 'core',
});
