import { context, propagation, ROOT_CONTEXT, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';

/**
 * The service's spans (OpenTelemetry API only: without an SDK, src/telemetry.ts, they cost next to
 * nothing). A run's trace context travels as a W3C `traceparent` in the run's record
 * (`observability.traceparent`) and in each lane command's payload, so the process that executes a
 * run (another API process, a worker node) continues the trace of the request that created it.
 */
export const tracer = trace.getTracer('asm');

/** The active trace context as a `traceparent`, or undefined when nothing is traced. */
export function currentTraceparent(): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/** The context a `traceparent` names; without one, the active context. */
export function contextOf(traceparent: unknown): Context {
  return typeof traceparent === 'string' ? propagation.extract(ROOT_CONTEXT, { traceparent }) : context.active();
}

/** Run `work` in a new span under `parent`: its failure is recorded on the span, which ends with it. */
export async function inSpan<T>(name: string, parent: Context, attributes: Attributes, work: (span: Span) => Promise<T>): Promise<T> {
  const span = tracer.startSpan(name, { attributes }, parent);
  try {
    return await context.with(trace.setSpan(parent, span), () => work(span));
  } catch (err) {
    span.recordException(err as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    throw err;
  } finally {
    span.end();
  }
}
