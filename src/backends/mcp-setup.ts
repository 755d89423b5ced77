import { AsmError } from '../errors/kinds.js';
import type { BackendRunSpec, Sandbox } from './types.js';

/**
 * A run of a session with MCP servers (README "MCP servers"), on either lane: the provider's files of
 * them are written into the session's MCP folder, which its sandbox shows the CLI read-only, and the
 * variables the provider asks for join the CLI's environment. The CLI gets the servers' secrets from
 * there, never from its argv. Stdio servers are the CLI's children, so they run in its sandbox.
 */
export async function withMcpServers(spec: BackendRunSpec, sandbox: Sandbox): Promise<BackendRunSpec> {
  const servers = spec.mcpServers;
  if (!servers || Object.keys(servers).length === 0) return spec;
  const mcp = spec.provider.mcp;
  if (!mcp) throw new AsmError('config_invalid', `mcp_servers: ${spec.provider.name} cannot take MCP servers`, { details: { field: 'mcp_servers' } });
  if (spec.surface.kind !== 'local_subprocess') {
    throw new AsmError('config_invalid', `mcp_servers: a CLI on the ${spec.surface.kind} surface cannot read the session's MCP files`, { details: { field: 'mcp_servers' } });
  }
  const dir = await sandbox.mcpFolder(spec.sessionId, mcp.files(servers));
  return { ...spec, env: { ...spec.env, ...mcp.env?.(servers, dir) }, mcp: { servers, dir } };
}
