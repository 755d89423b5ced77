/**
 * The baseline of `bench -- fanout`: a bare broadcaster of events, over WebSocket (`ws`, at
 * /v1/events) and SSE (at /v1/sse), that any client may join, and that sends every client each event
 * of a burst, serialised once per event, as a simple broadcaster would. `POST /emit` with {count,
 * event} sends `count` copies of `event` (seq 1…count), yielding to the event loop between events as
 * a server fed by a CLI does, then ends the SSE streams (as ASM's end with their run); it answers
 * once all are handed to the sockets. Prints its port on stdout once listening.
 */
import { createServer, type ServerResponse } from 'node:http';
import { setImmediate as turn } from 'node:timers/promises';
import { WebSocketServer } from 'ws';

const sseStreams = new Set<ServerResponse>();

const server = createServer((request, response) => {
  if (request.method === 'GET' && request.url === '/v1/sse') {
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    response.write(': stream open\n\n');
    sseStreams.add(response);
    response.on('close', () => sseStreams.delete(response));
    return;
  }
  let body = '';
  request.on('data', (chunk) => (body += chunk));
  request.on('end', async () => {
    const { count, event } = JSON.parse(body) as { count: number; event: Record<string, unknown> };
    const streams = [...sseStreams];
    for (let seq = 1; seq <= count; seq++) {
      const json = JSON.stringify({ ...event, seq });
      const frame = `{"type":"event","event":${json}}`;
      for (const client of sockets.clients) client.send(frame);
      if (streams.length > 0) {
        const message = Buffer.from(`id: ${seq}\nevent: ${String(event.kind)}\ndata: ${json}\n\n`);
        for (const stream of streams) stream.write(message);
      }
      await turn();
    }
    for (const stream of streams) stream.end();
    response.end('{}');
  });
});
const sockets = new WebSocketServer({ server, path: '/v1/events' });
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
