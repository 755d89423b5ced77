/** Claude Code's control channel: the messages we send it and the control_requests it sends us. */
import { raw } from '../common.js';
import type { ApprovalDecision, ApprovalRequest, ProviderLineOutput } from '../types.js';
import type { ClaudeLine, PermissionUpdate } from './messages.js';

/** Our own control_request ids only need to be unique within the process. */
const INITIALIZE_REQUEST_ID = 'init_1';

/** What we need to answer a can_use_tool request (ApprovalRequest.native). */
interface ToolPermissionRequest {
  request_id: string;
  input: unknown;
  permission_suggestions: PermissionUpdate[];
}

/** The first line on stdin, before the user turn. */
export function initializeRequest(): string {
  return JSON.stringify({ type: 'control_request', request_id: INITIALIZE_REQUEST_ID, request: { subtype: 'initialize' } });
}

/** The interrupt control_request; `count` numbers this process's interrupts, so each has its own id. */
export function interruptRequest(count: number): string {
  return JSON.stringify({ type: 'control_request', request_id: `int_${count}`, request: { subtype: 'interrupt' } });
}

/** The user message that starts the turn, the same on both lanes. */
export function userTurn(prompt: string): Record<string, unknown> {
  return { type: 'user', message: { role: 'user', content: [{ type: 'text', text: prompt }] }, parent_tool_use_id: null, session_id: '' };
}

/** The answer to a can_use_tool request (a PermissionResult), the same on both lanes. */
export function permissionAnswer(input: unknown, suggestions: PermissionUpdate[], decision: ApprovalDecision, reason: string | null): Record<string, unknown> {
  if (decision === 'deny') return { behavior: 'deny', message: reason ?? 'Denied by the user', interrupt: false };
  return {
    behavior: 'allow',
    // Always sent: the CLI's MCP permission path requires it.
    updatedInput: input,
    // "Allow for this session": the CLI's own suggestions, kept out of its settings files.
    ...(decision === 'allow_for_session' && {
      updatedPermissions: suggestions.map((update) => ({ ...update, destination: 'session' })),
    }),
  };
}

/** The control_response that settles an approval which controlRequest() reported. */
export function approvalResponse(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null): string {
  const request = approval.native as ToolPermissionRequest;
  const answer = permissionAnswer(request.input, request.permission_suggestions, decision, reason);
  return controlResponse(request.request_id, { subtype: 'success', response: answer });
}

/** A control_request from the CLI: can_use_tool is an approval, anything else is refused. */
export function controlRequest(line: ClaudeLine): ProviderLineOutput {
  const request = line.request ?? {};
  if (request.subtype === 'can_use_tool' && line.request_id) {
    const native: ToolPermissionRequest = {
      request_id: line.request_id,
      input: request.input,
      permission_suggestions: request.permission_suggestions ?? [],
    };
    const approval: ApprovalRequest = { subject: request.tool_name ?? '', toolInput: request.input, native };
    return { approvals: [approval] };
  }
  // We register no hooks or SDK MCP servers, so nothing else should be asked; if it is, the CLI must
  // not wait forever for an answer.
  return {
    events: [raw(line)],
    write: [controlResponse(line.request_id, { subtype: 'error', error: `ASM does not handle ${request.subtype} requests` })],
  };
}

function controlResponse(requestId: string | undefined, body: Record<string, unknown>): string {
  return JSON.stringify({ type: 'control_response', response: { ...body, request_id: requestId } });
}
