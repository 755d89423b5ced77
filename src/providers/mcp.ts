import { join } from 'node:path';
import type { McpServer, McpServers } from '../schemas/mcp-servers.js';
import type { ProviderRunInput } from './types.js';

/**
 * What the providers' MCP configurations share (README "MCP servers"): telling the two shapes of a
 * server apart, and where a run's config file is. Not a provider (the registry skips this file);
 * each provider's own rendering lives in its file, next to its argv.
 */

export type McpStdioServer = Extract<McpServer, { command: string }>;
export type McpHttpServer = Extract<McpServer, { url: string }>;

export function isStdio(server: McpServer): server is McpStdioServer {
  return 'command' in server;
}

/** The servers in name order, so every rendering (and its generated names) is the same for the same servers. */
export function serversInOrder(servers: McpServers): Array<[string, McpServer]> {
  return Object.entries(servers).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The path, as the CLI sees it, of a file ProviderMcp.files made for this run; undefined without MCP servers. */
export function mcpFilePath(input: ProviderRunInput, name: string): string | undefined {
  return input.mcp ? join(input.mcp.dir, name) : undefined;
}

/**
 * The servers as most CLIs' JSON configs take them: `{name: {command, args, env} | {<urlKey>: url,
 * headers}}`, with `extra` fields per shape (claude's `type`).
 */
export function jsonServers(
  servers: McpServers,
  urlKey: string,
  extra: { stdio?: Record<string, unknown>; http?: Record<string, unknown> } = {},
): Record<string, unknown> {
  return Object.fromEntries(
    serversInOrder(servers).map(([name, server]) => [
      name,
      isStdio(server)
        ? { ...extra.stdio, command: server.command, args: server.args ?? [], env: server.env ?? {} }
        : { ...extra.http, [urlKey]: server.url, headers: server.headers ?? {} },
    ]),
  );
}
