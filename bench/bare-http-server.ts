/**
 * The baseline of `bench -- http`: a bare Fastify server (no logger, no hooks, no schemas) answering
 * the same four routes with JSON of the same size as ASM's answers, read from the file named by
 * argv[2]. Prints its port on stdout once listening.
 */
import Fastify from 'fastify';
import { readFileSync } from 'node:fs';

const bodies = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Record<'session' | 'run' | 'events' | 'queued', unknown>;
const app = Fastify();
app.post('/v1/sessions', async (_request, reply) => reply.status(201).send(bodies.session));
app.get('/v1/runs/:id', async () => bodies.run);
app.get('/v1/runs/:id/events', async () => bodies.events);
app.post('/v1/sessions/:id/runs', async (_request, reply) => reply.status(202).send(bodies.queued));
await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`${(app.server.address() as { port: number }).port}\n`);
