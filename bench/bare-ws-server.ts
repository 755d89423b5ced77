/**
 * The baseline of `bench -- fanout`: a bare `ws` server that any client may join, and that sends
 * every client each event of a burst, serialised once per event, as a simple broadcaster would.
 * `POST /emit` with {count, event} sends `count` copies of `event` (seq 1…count), yielding to the
 * event loop between events as a server fed by a CLI does; it answers once all are handed to the
 * sockets. Prints its port on stdout once listening.
 */
import { createServer } from 'node:http';
import { setImmediate as turn } from 'node:timers/promises';
import { WebSocketServer } from 'ws';

const server = createServer((request, response) => {
  let body = '';
  request.on('data', (chunk) => (body += chunk));
  request.on('end', async () => {
    const { count, event } = JSON.parse(body) as { count: number; event: Record<string, unknown> };
    for (let seq = 1; seq <= count; seq++) {
      const frame = JSON.stringify({ type: 'event', event: { ...event, seq } });
      for (const client of sockets.clients) client.send(frame);
      await turn();
    }
    response.end('{}');
  });
});
const sockets = new WebSocketServer({ server, path: '/v1/events' });
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
