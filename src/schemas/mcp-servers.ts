import { Type, type Static } from '@sinclair/typebox';

/**
 * A session's MCP servers as the API takes them (README "MCP servers"): by name, a stdio server the
 * agent CLI starts or a remote one over streamable HTTP. sessions/mcp-servers.ts checks and redacts
 * them; each provider's file says how its CLI takes them.
 */

/** A server's name: what the agent's tool names are made of (claude: mcp__<name>__<tool>). */
export const MCP_SERVER_NAME = '^[A-Za-z0-9_-]{1,64}$';
/** Names of environment variables and HTTP headers. */
const EnvName = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z_][A-Za-z0-9_]*$' });
const HeaderName = Type.String({ minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$" });
/** A secret value: taken on create, never answered back (the session shows "[redacted]"). */
const SecretValue = Type.String({ maxLength: 16_384 });
export const MCP_REDACTED = '[redacted]';

export const McpStdioServer = Type.Object(
  {
    command: Type.String({ minLength: 1, maxLength: 4096, description: 'Started by the agent CLI, inside the session\'s sandbox' }),
    args: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256 })),
    env: Type.Optional(Type.Record(EnvName, SecretValue, { maxProperties: 64, description: 'Secret: never answered back or logged' })),
  },
  { additionalProperties: false, description: 'A stdio server: a command the agent CLI starts' },
);
export const McpHttpServer = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 4096, pattern: '^https?://', description: 'A streamable HTTP MCP endpoint' }),
    headers: Type.Optional(Type.Record(HeaderName, SecretValue, { maxProperties: 64, description: 'Secret: never answered back or logged' })),
  },
  { additionalProperties: false, description: 'A remote server over streamable HTTP' },
);
export const McpServer = Type.Union([McpStdioServer, McpHttpServer]);
export type McpServer = Static<typeof McpServer>;
export const McpServers = Type.Record(Type.String({ pattern: MCP_SERVER_NAME }), McpServer, {
  additionalProperties: false,
  maxProperties: 256,
  description: 'MCP servers the agent may use, by name. Counts and sizes are bounded by ASM_MCP_MAX_SERVERS and ASM_MCP_MAX_CONFIG_BYTES',
});
export type McpServers = Static<typeof McpServers>;
