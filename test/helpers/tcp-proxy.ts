/**
 * A TCP proxy on a free loopback port in front of `target`, whose `withholdReplies` stops passing what
 * the target sends on the connections open now (it stays in the target's send buffer), while what
 * the client sends still goes through and later connections are untouched. That is how a network
 * partition that has healed looks to a client until the server's TCP retransmission backoff ends: its
 * requests arrive, the answers do not (test/lanes/bullmq-signals.test.ts, test/store/redis.test.ts).
 */
import { createConnection, createServer, type Socket } from 'node:net';

export interface TcpProxy {
  port: number;
  withholdReplies(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<{ client: Socket; upstream: Socket }>();
  const server = createServer((client) => {
    const upstream = createConnection(target);
    const pair = { client, upstream };
    open.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) socket.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    withholdReplies() {
      for (const { client, upstream } of open) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    async close() {
      for (const { client, upstream } of open) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
