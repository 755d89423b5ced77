import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_TYPES_PATH, generateClientTypes, generateOpenApi, OPENAPI_PATH } from '../scripts/openapi.js';
import { ERROR_DOMAINS, ERROR_KIND_NAMES } from '../src/errors/kinds.js';
import { startServer, type TestServer } from './helpers/server.js';

/** openapi/openapi.json is generated from the route schemas (npm run openapi) and must not drift from them. */

const committed = readFileSync(OPENAPI_PATH, 'utf8');
const doc = JSON.parse(committed);
const METHODS = ['get', 'put', 'post', 'delete', 'patch'];
const operations: Array<{ path: string; method: string; op: any }> = Object.entries<any>(doc.paths).flatMap(([path, item]) =>
  METHODS.filter((m) => item[m]).map((method) => ({ path, method, op: item[method] })),
);
/** Health probes answer without a key (src/http/auth.ts) and cannot fail with a 4xx of their own. */
const PUBLIC = new Set(['get /healthz', 'get /readyz']);

/** The values a `kind`/`domain` schema allows (@fastify/swagger renders TypeBox literals as one-value enums). */
function literals(schema: any): unknown[] {
  return schema.anyOf.flatMap((s: any) => s.enum ?? [s.const]);
}

describe('openapi/openapi.json', () => {
  it('is what the server generates now (else: npm run openapi)', async () => {
    expect(committed).toBe(await generateOpenApi());
  });

  it("is what the TypeScript client's committed types were generated from (else: npm run openapi)", async () => {
    expect(readFileSync(CLIENT_TYPES_PATH, 'utf8')).toBe(await generateClientTypes(committed));
  });

  it('is OpenAPI 3.1 with nothing of the machine that generated it', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
    expect(doc.servers).toBeUndefined();
    expect(committed).not.toMatch(/\/tmp\/|\/home\/|\/work\/|asm-openapi-|\d{4}-\d\d-\d\dT\d\d:/);
    expect(committed.endsWith('}\n')).toBe(true);
    expect(committed).toBe(`${JSON.stringify(doc, null, 2)}\n`);
  });

  it('describes the main paths', () => {
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/sessions',
        '/v1/sessions/{id}',
        '/v1/sessions/{id}/runs',
        '/v1/sessions/{id}/approvals',
        '/v1/runs/{id}',
        '/v1/runs/{id}/events',
        '/v1/runs/{id}/interrupt',
        '/v1/approvals/{id}',
        '/v1/queues',
        '/v1/dlq',
        '/v1/providers',
        '/v1/nodes',
        '/healthz',
        '/readyz',
      ]),
    );
    expect(doc.paths['/v1/sessions'].post.requestBody.content['application/json'].schema.required).toEqual(['provider']);
    expect(doc.paths['/v1/sessions/{id}/runs'].post.responses).toHaveProperty('202');
    expect(doc.paths['/v1/runs/{id}/events'].get.parameters.map((p: any) => `${p.in}:${p.name}`)).toEqual(
      expect.arrayContaining(['query:after', 'query:limit', 'path:id']),
    );
  });

  it('gives every operation that needs a key 4xx responses with the error schema', () => {
    const errorSchema = doc.paths['/v1/sessions'].post.responses['400'].content['application/json'].schema;
    // A named component, so generated clients get one Error type.
    expect(errorSchema).toEqual({ $ref: '#/components/schemas/Error' });
    const errorComponent = doc.components.schemas.Error;
    expect(errorComponent.required).toEqual(['error']);
    const error = errorComponent.properties.error;
    expect(error.required).toEqual(['kind', 'domain', 'message', 'retryable']);
    expect(literals(error.properties.kind)).toEqual(ERROR_KIND_NAMES);
    expect(literals(error.properties.domain)).toEqual([...ERROR_DOMAINS]);
    expect(error.properties.details.type).toBe('object');

    const guarded = operations.filter(({ path, method }) => !PUBLIC.has(`${method} ${path}`));
    expect(guarded.length).toBeGreaterThan(15);
    for (const { path, method, op } of guarded) {
      const where = `${method.toUpperCase()} ${path}`;
      const fourXX = Object.keys(op.responses).filter((status) => /^4\d\d$/.test(status));
      expect(fourXX, where).toContain('401');
      for (const status of fourXX) {
        expect(op.responses[status].content['application/json'].schema, `${where} ${status}`).toEqual(errorSchema);
      }
      expect(op.security, where).toBeUndefined(); // the document-wide bearer requirement applies
    }
    expect(doc.security).toEqual([{ bearer: [] }]);
  });

  it('publishes the shared schemas as named components and references them', () => {
    for (const name of ['Session', 'Run', 'RunResult', 'Event', 'EventMetadata', 'Approval', 'QueueInfo', 'DeadLetter', 'ProviderInfo', 'NodeInfo', 'Error']) {
      expect(doc.components.schemas[name], name).toBeDefined();
    }
    expect(doc.paths['/v1/sessions/{id}'].get.responses['200'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Session' });
    expect(doc.components.schemas.Run.properties.result.anyOf).toContainEqual({ $ref: '#/components/schemas/RunResult' });
  });

  it('marks the health probes as needing no key', () => {
    for (const key of PUBLIC) {
      const [method, path] = key.split(' ');
      expect(doc.paths[path][method].security, key).toEqual([]);
    }
  });

  describe('served over HTTP', () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startServer();
    });
    afterAll(async () => {
      await server?.close();
    });

    it('GET /openapi.json returns the same document', async () => {
      const res = await server.request('GET', '/openapi.json');
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('application/json');
      expect(res.body).toEqual(doc);
    });
  });
});
