/**
 * Which part of src/ may import which: `npm run lint:arch` checks it (in .ci/run, after the
 * typecheck), and test/architecture.test.ts shows each rule catching a violation. Rules name folders,
 * never files, so a file may move within its folder freely. Type-only imports count: they tie one
 * folder to another as much as value imports do. Packages and Node's own modules are always allowed.
 */

/** Rule name → [the modules it is about, what of src/ they must not import]. */
const NEVER = {
  // No module is part of an import cycle: the modules of a cycle can only be read, and loaded, together.
  'no-cycles': ['^src/', { circular: true }],
  // src/lanes is a queue engine of its own (src/lanes/README.md): it imports nothing else of the app.
  'lanes-stand-alone': ['^src/lanes/', { path: '^src/', pathNot: '^src/lanes/' }],
  // A provider translates one CLI; HTTP, storage and queueing are for the layers that use it.
  'providers-know-no-transport': ['^src/providers/', { path: '^src/(http|store|lanes)/' }],
  // HTTP uses the store, the sessions and the backends; they never depend on HTTP.
  'http-on-top': ['^src/(store|sessions|backends)/', { path: '^src/http/' }],
  // The wire schemas import only one another and the error vocabulary...
  'schemas-are-leaves': ['^src/schemas/', { path: '^src/', pathNot: '^src/(schemas/|errors/kinds\\.ts$)' }],
  // ...which imports nothing of the app, so that everything may import it.
  'error-kinds-are-a-leaf': ['^src/errors/kinds\\.ts$', { path: '^src/' }],
  // The TypeScript client (exported as asm/client) knows the service only by its wire vocabulary.
  'client-knows-only-the-wire': ['^src/client/', { path: '^src/', pathNot: '^src/(client/|schemas/|errors/kinds\\.ts$)' }],
};

module.exports = {
  forbidden: [
    ...Object.entries(NEVER).map(([name, [from, to]]) => ({ name, severity: 'error', from: { path: from }, to })),
    // Nor is any folder part of a cycle: if store imports sessions, nothing sessions reaches may import store.
    { name: 'no-folder-cycles', severity: 'error', scope: 'folder', from: { path: '^src/' }, to: { circular: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Follow `import type` too (it is erased before run time, but not from the design).
    tsPreCompilationDeps: true,
  },
};
