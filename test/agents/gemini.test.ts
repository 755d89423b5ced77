import { GEMINI_MODEL } from './harness.js';
import { describeThroughService } from './service-scenarios.js';

/**
 * Gemini through the service, against the model server. Headless gemini cannot ask: the session's
 * permission mode picks --approval-mode, and only yolo registers the shell tool.
 */
describeThroughService('gemini', {
  session: { model: GEMINI_MODEL },
  textKind: 'assistant_delta',
  // bypass: only then is the shell tool registered (--approval-mode yolo); the interrupt scenario runs in it.
  shellSession: { permission_mode: 'bypass' },
  approvals: 'cannot_ask',
  down: { kind: 'connection_failed', session: {} },
});
