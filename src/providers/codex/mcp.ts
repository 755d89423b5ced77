/** How codex gets a session's MCP servers: `-c mcp_servers.<name>.…` overrides, the secrets in its environment. */
import { badField } from '../../errors/kinds.js';
import type { McpServers } from '../../schemas/mcp-servers.js';
import { BASE_ENV_NAMES } from '../env.js';
import { isStdio, serversInOrder } from '../mcp.js';
import type { ProviderMcp, ProviderRunInput } from '../types.js';

/**
 * Codex reads MCP servers from its config (`[mcp_servers.<name>]`), which `-c key=value` overrides
 * per run (a TOML value; JSON strings and arrays are TOML too). Only what is not secret goes there:
 *
 *   stdio  command, args, and `env_vars`: the names of variables codex passes on to the server from
 *          its own environment, where ASM puts the values
 *   http   url, and `env_http_headers`: each header → a variable (ASM_MCP_<i>_HEADER_<j>) holding its value
 *
 * So a variable of one server is the same variable for all of them: two servers may not give one
 * name two values, and a name may not be one codex itself runs with (its PATH, its keys).
 */

/** Names codex's own environment holds (env.ts, codex/index.ts): a server's value there would change codex's. */
const CODEX_OWN = new Set([...BASE_ENV_NAMES, 'CODEX_API_KEY', 'OPENAI_API_KEY', 'CODEX_ACCESS_TOKEN', 'CODEX_HOME']);
const HEADER_VARIABLE = /^ASM_MCP_/;

function headerVariable(server: number, header: number): string {
  return `ASM_MCP_${server}_HEADER_${header}`;
}

function check(servers: McpServers): void {
  const given = new Map<string, string>();
  for (const [name, server] of serversInOrder(servers)) {
    if (!isStdio(server)) continue;
    for (const [variable, value] of Object.entries(server.env ?? {})) {
      const field = `mcp_servers.${name}.env.${variable}`;
      if (CODEX_OWN.has(variable) || HEADER_VARIABLE.test(variable)) {
        throw badField(field, `codex passes a server's variables through its own environment, where ${variable} is codex's`);
      }
      if (given.has(variable) && given.get(variable) !== value) {
        throw badField(field, `codex passes a server's variables through its own environment: two servers cannot give ${variable} different values`);
      }
      given.set(variable, value);
    }
  }
}

function env(servers: McpServers): Record<string, string> {
  const variables: Record<string, string> = {};
  serversInOrder(servers).forEach(([, server], i) => {
    if (isStdio(server)) Object.assign(variables, server.env);
    else Object.values(server.headers ?? {}).forEach((value, j) => (variables[headerVariable(i, j)] = value));
  });
  return variables;
}

/** The `key=value` config overrides of the run's servers (for `-c`, and the SDK's configOverrides). */
export function codexMcpOverrides(input: ProviderRunInput): string[] {
  if (!input.mcp) return [];
  return serversInOrder(input.mcp.servers).flatMap(([name, server], i) => {
    const key = `mcp_servers.${name}`;
    if (isStdio(server)) {
      return [
        `${key}.command=${JSON.stringify(server.command)}`,
        `${key}.args=${JSON.stringify(server.args ?? [])}`,
        `${key}.env_vars=${JSON.stringify(Object.keys(server.env ?? {}))}`,
      ];
    }
    const headers = Object.keys(server.headers ?? {}).map((header, j) => `${JSON.stringify(header)} = ${JSON.stringify(headerVariable(i, j))}`);
    return [`${key}.url=${JSON.stringify(server.url)}`, `${key}.env_http_headers={${headers.join(', ')}}`];
  });
}

/** `-c` before each override, for the CLI's argv. */
export function codexMcpArgs(input: ProviderRunInput): string[] {
  return codexMcpOverrides(input).flatMap((override) => ['-c', override]);
}

export const CODEX_MCP: ProviderMcp = { check, files: () => [], env };
