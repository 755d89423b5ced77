import { context, propagation, ProxyTracerProvider, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import type { FastifyInstance, FastifyRequest } from 'fastify';

const tracer = trace.getTracer('asm');

/**
 * A span for each HTTP request, named by its route pattern, continuing the caller's trace when the
 * request carries a W3C `traceparent`. The route's handler runs in the span's context, so a run it
 * creates records the trace (sessions/admission.ts) and the lane commands it submits carry it.
 * Without an OpenTelemetry SDK (src/telemetry.ts) no hook is added: its spans would be the API's
 * no-ops, its propagator extracts nothing, and four hooks a request cost time on the request path.
 */
export function registerTracing(fastify: FastifyInstance): void {
  if (!tracerInstalled()) return;
  const spans = new WeakMap<FastifyRequest, Span>();
  fastify.addHook('onRequest', (request, _reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const span = tracer.startSpan(
      `${request.method} ${route}`,
      { kind: SpanKind.SERVER, attributes: { 'http.request.method': request.method, 'http.route': route, 'asm.request_id': request.id } },
      parent,
    );
    spans.set(request, span);
    done();
  });
  // After the body is read (whose stream events would lose the context), before the handler.
  fastify.addHook('preHandler', (request, _reply, done) => {
    const span = spans.get(request);
    if (!span) return done();
    context.with(trace.setSpan(context.active(), span), done);
  });
  fastify.addHook('onError', async (request, _reply, err) => {
    const span = spans.get(request);
    span?.recordException(err);
  });
  fastify.addHook('onResponse', async (request, reply) => {
    const span = spans.get(request);
    if (!span) return;
    span.setAttribute('http.response.status_code', reply.statusCode);
    if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
  });
}

/** Whether an SDK registered a tracer provider (telemetry.ts, or a test's own) before the server was built. */
function tracerInstalled(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer('asm') !== undefined;
}
