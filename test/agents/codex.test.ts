import { expect } from 'vitest';
import { describeThroughService } from './service-scenarios.js';

/**
 * Codex through the service with default session options: no `lane` given, so `auto` with the SDK
 * installed. Codex's SDK lane cannot ask for approval, and the default permission mode asks, so lane
 * resolution puts these sessions on the core lane (`codex app-server`), which can
 * (lane_fallback_reason sdk_capability_missing). Against the model server. A refused connection is
 * retried by codex 0.169 forever ("Reconnecting... waiting for network", see codex-cli.test.ts), so
 * that run ends by its deadline.
 */
describeThroughService('codex', {
  session: {},
  textKind: 'assistant_message',
  shellSession: {},
  approvals: 'asks',
  down: { kind: 'timeout', session: { run_deadline_ms: 8_000 } },
  checks: {
    approval(_decision, { run, events }) {
      const onCore = { requested_lane: 'auto', preferred_lane: 'sdk', lane: 'core', lane_fallback_reason: 'sdk_capability_missing', missing_capabilities: ['approvals'], sdk_available: true };
      expect(run.result.metadata).toMatchObject(onCore);
      for (const event of events) expect(event.metadata).toMatchObject(onCore);
    },
  },
});
