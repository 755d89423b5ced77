/** The part of autocannon's API the benchmarks use (the package ships no types). */
declare module 'autocannon' {
  namespace autocannon {
    interface Request {
      method?: string;
      path?: string;
      headers?: Record<string, string>;
      body?: string;
      setupRequest?: (request: Request) => Request;
    }
    interface Options extends Request {
      url: string;
      connections?: number;
      duration?: number;
      requests?: Request[];
      /** Requests a second across all connections. */
      overallRate?: number;
    }
    interface Result {
      requests: { average: number; total: number };
      latency: { p50: number; p99: number; max: number };
      non2xx: number;
      errors: number;
    }
  }
  function autocannon(options: autocannon.Options): Promise<autocannon.Result>;
  export default autocannon;
}
