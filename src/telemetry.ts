import type { SpanExporter } from '@opentelemetry/sdk-trace-node';
import { VERSION } from './version.js';

type Env = Record<string, string | undefined>;

/**
 * The OpenTelemetry SDK behind the spans of src/http/tracing.ts and src/sessions/tracing.ts, switched
 * on by the standard variables and off by default: OTEL_TRACES_EXPORTER=otlp sends them over OTLP/HTTP
 * (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, read
 * by the exporter itself), `console` prints them; OTEL_SDK_DISABLED=true, `none` or no value leaves
 * the API's no-ops. OTEL_SERVICE_NAME (default `asm`), OTEL_TRACES_SAMPLER and OTEL_BSP_* apply as the
 * SDK reads them. Returns the shutdown that flushes what is buffered, or undefined when off.
 */
export async function startTracing(env: Env = process.env): Promise<(() => Promise<void>) | undefined> {
  const names = (env.OTEL_TRACES_EXPORTER ?? 'none').split(',').map((name) => name.trim()).filter((name) => name && name !== 'none');
  if (env.OTEL_SDK_DISABLED === 'true' || names.length === 0) return undefined;
  // The SDK is loaded only when it is used, as the OTLP exporter below: 50 ms of a start that does not trace.
  const [{ resourceFromAttributes }, { BatchSpanProcessor, ConsoleSpanExporter, NodeTracerProvider }] = await Promise.all([
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-node'),
  ]);
  const exporters: SpanExporter[] = [];
  for (const name of names) {
    if (name === 'otlp') {
      // Likewise the exporter and its protobuf code, out of a process that traces to the console.
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
      exporters.push(new OTLPTraceExporter());
    } else if (name === 'console') {
      exporters.push(new ConsoleSpanExporter());
    } else {
      throw new Error(`OTEL_TRACES_EXPORTER: "${name}" is not supported here; use otlp, console or none`);
    }
  }
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME || 'asm', 'service.version': VERSION }),
    spanProcessors: exporters.map((exporter) => new BatchSpanProcessor(exporter)),
  });
  // Also installs the W3C trace-context propagator and the AsyncLocalStorage context manager.
  provider.register();
  return () => provider.shutdown();
}
