import type { AsmConfig } from '../config.js';
import { badField } from '../errors/kinds.js';
import { isStdio } from '../providers/mcp.js';
import type { ProviderDefinition } from '../providers/types.js';
import type { ExecutionSurface } from '../schemas/api.js';
import { MCP_REDACTED, type McpServers } from '../schemas/mcp-servers.js';

/**
 * A session's MCP servers (README "MCP servers"): checked on create, so a session whose servers could
 * never reach its CLI is refused with the field named, and shown with their secrets redacted. The
 * secrets (a stdio server's `env`, an HTTP server's `headers`) are kept on the session's record
 * (`mcp_server_config`), which the API never shows, and reach only the CLI (backends/mcp-setup.ts).
 */
export function checkMcpServers(
  servers: McpServers | undefined,
  provider: ProviderDefinition,
  surface: ExecutionSurface,
  local: boolean,
  config: AsmConfig,
): McpServers {
  if (!servers || Object.keys(servers).length === 0) return {};
  const { mcpServers, mcpConfigBytes } = config.limits;
  const count = Object.keys(servers).length;
  if (count > mcpServers) throw badField('mcp_servers', `${count} servers, more than the ${mcpServers} a session may have (ASM_MCP_MAX_SERVERS)`);
  const bytes = Buffer.byteLength(JSON.stringify(servers));
  if (bytes > mcpConfigBytes) throw badField('mcp_servers', `${bytes} bytes of JSON, more than ${mcpConfigBytes} (ASM_MCP_MAX_CONFIG_BYTES)`);
  if (!provider.mcp) throw badField('mcp_servers', `${provider.name} cannot take MCP servers`);
  if (surface.kind !== 'local_subprocess') throw badField('mcp_servers', `a CLI on the ${surface.kind} surface cannot read the session's MCP files`);
  if (local && config.sandbox.kind === 'none') {
    throw badField('mcp_servers', 'need the sandbox (ASM_SANDBOX=bwrap), which gives each session a private folder for their secrets');
  }
  provider.mcp.check?.(servers);
  return servers;
}

/** The servers as the API shows them: every secret value replaced, the names of variables and headers kept. */
export function redactMcpServers(servers: McpServers): McpServers {
  const redacted = (values: Record<string, string>) => Object.fromEntries(Object.keys(values).map((name) => [name, MCP_REDACTED]));
  return Object.fromEntries(
    Object.entries(servers).map(([name, server]) => [
      name,
      isStdio(server)
        ? { command: server.command, ...(server.args && { args: server.args }), ...(server.env && { env: redacted(server.env) }) }
        : { url: server.url, ...(server.headers && { headers: redacted(server.headers) }) },
    ]),
  );
}
