import { chmod, rm } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * The network of a sandbox whose hosts the operator restricts (ASM_SANDBOX_ALLOWED_HOSTS).
 *
 * The sandbox then has a network namespace of its own, with a loopback interface and nothing else:
 * no route out, no DNS, not even the host's loopback. Its one way out is this proxy, which listens on
 * a unix socket that every such sandbox has bound in (EGRESS_SOCKET). Inside, a relay (RELAY_SCRIPT,
 * run by the Node.js the sandbox already shows) listens on EGRESS_PORT of the sandbox's loopback,
 * passes each connection to the socket, and starts the CLI; HTTP_PROXY and HTTPS_PROXY point the CLI
 * at it. The proxy serves CONNECT (TLS and any TCP) and plain HTTP requests in absolute form, to the
 * allowed hosts only; anything else gets 403. A CLI that ignores the proxy variables reaches nothing.
 *
 * An entry is `host` (any port), `host:port`, `*.domain` (its subdomains, any port) or `*.domain:port`;
 * names are compared without case, IP addresses as written.
 */

/** Where the proxy's socket is inside each sandbox. */
export const EGRESS_SOCKET = '/run/asm-egress.sock';
/** The relay's port on the sandbox's own loopback. */
export const EGRESS_PORT = 3128;

/**
 * The relay, for `node -e RELAY_SCRIPT <socket> <port> <command> <args…>`: listens, then runs the
 * command and exits with its status (128 + N for a signal). The signals the service sends the group
 * reach the command directly; the relay itself keeps the dispositions it was started with (ignored).
 */
export const RELAY_SCRIPT = [
  "const net = require('net'), { spawn } = require('child_process'), { constants } = require('os');",
  'const [socket, port, command, ...args] = process.argv.slice(1);',
  'const server = net.createServer((inside) => {',
  '  const outside = net.connect(socket);',
  '  inside.pipe(outside).pipe(inside);',
  "  inside.on('error', () => outside.destroy());",
  "  outside.on('error', () => inside.destroy());",
  '});',
  "server.listen(Number(port), '127.0.0.1', () => {",
  "  const child = spawn(command, args, { stdio: 'inherit' });",
  "  child.on('error', (err) => { process.stderr.write(`${command}: ${err.message}\\n`); process.exit(127); });",
  "  child.on('exit', (code, signal) => process.exit(code ?? 128 + constants.signals[signal]));",
  '});',
].join('\n');

interface Allowed {
  host: string;
  /** Subdomains of `host` rather than `host` itself. */
  subdomains: boolean;
  port: number | null;
}

function parseEntry(entry: string): Allowed {
  const match = /^(\*\.)?(\[[0-9a-f:.]+\]|[^:]+)(?::(\d{1,5}))?$/i.exec(entry.trim());
  if (!match) throw new Error(`ASM_SANDBOX_ALLOWED_HOSTS: "${entry}" is not host, host:port or *.domain`);
  return { host: match[2]!.replace(/^\[|\]$/g, '').toLowerCase(), subdomains: Boolean(match[1]), port: match[3] ? Number(match[3]) : null };
}

export class EgressProxy {
  private readonly sockets = new Set<Duplex>();

  private constructor(
    private readonly server: Server,
    readonly socketPath: string,
  ) {}

  /** Listens on `socketPath` (replacing a stale socket there); throws on an entry it cannot read. */
  static async start(socketPath: string, entries: string[]): Promise<EgressProxy> {
    const allowed = entries.map(parseEntry);
    const allows = (host: string, port: number) => {
      const name = host.replace(/^\[|\]$/g, '').toLowerCase();
      return allowed.some(
        (entry) =>
          (entry.port === null || entry.port === port) &&
          (entry.subdomains ? isIP(name) === 0 && name.endsWith(`.${entry.host}`) : name === entry.host),
      );
    };
    const server = createServer();
    const proxy = new EgressProxy(server, socketPath);
    server.on('connect', (req: IncomingMessage, client: Duplex, head: Buffer) => proxy.tunnel(req, client, head, allows));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => proxy.forward(req, res, allows));
    server.on('connection', (socket: Socket) => proxy.track(socket));
    await rm(socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    // The folder it lives in is the service's alone; inside a sandbox the CLI's account must connect.
    await chmod(socketPath, 0o666);
    return proxy;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private track(socket: Duplex): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
  }

  /** CONNECT host:port: a tunnel to an allowed host. */
  private tunnel(req: IncomingMessage, client: Duplex, head: Buffer, allows: (host: string, port: number) => boolean): void {
    this.track(client);
    client.on('error', () => client.destroy());
    const target = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(req.url ?? '');
    const host = target?.[1];
    const port = Number(target?.[2]);
    if (!host || !allows(host, port)) {
      client.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n\r\n${req.url} is not in ASM_SANDBOX_ALLOWED_HOSTS\n`);
      return;
    }
    const upstream = connect(port, host.replace(/^\[|\]$/g, ''), () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client).pipe(upstream);
    });
    this.track(upstream);
    upstream.on('error', () => client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'));
  }

  /** A plain HTTP request in absolute form (`GET http://host/path`): forwarded to an allowed host. */
  private forward(req: IncomingMessage, res: ServerResponse, allows: (host: string, port: number) => boolean): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('a proxy request names an absolute http:// URL\n');
      return;
    }
    const port = Number(url.port || 80);
    if (url.protocol !== 'http:' || !allows(url.hostname, port)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`${url.host} is not in ASM_SANDBOX_ALLOWED_HOSTS\n`);
      return;
    }
    const upstream = request({ host: url.hostname.replace(/^\[|\]$/g, ''), port, method: req.method, path: `${url.pathname}${url.search}`, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(upstream);
  }
}
