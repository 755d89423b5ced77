/**
 * Which part of src/ may import which: `npm run lint:arch` checks it (in .ci/run, after the
 * typecheck), and test/architecture.test.ts shows each rule catching a violation. Rules name folders,
 * never files, so a file may move within its folder freely. Type-only imports count: they tie one
 * folder to another as much as value imports do. Packages and Node's own modules are always allowed.
 */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'No module is part of an import cycle: the modules of a cycle can only be read, and loaded, together.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-folder-cycles',
      comment: 'Nor is any folder: if store imports sessions, nothing sessions reaches may import store.',
      severity: 'error',
      scope: 'folder',
      from: {},
      to: { circular: true },
    },
    {
      name: 'lanes-stand-alone',
      comment: 'src/lanes is a queue engine of its own (src/lanes/README.md): it imports nothing else of the app.',
      severity: 'error',
      from: { path: '^src/lanes/' },
      to: { path: '^src/', pathNot: '^src/lanes/' },
    },
    {
      name: 'providers-know-no-transport',
      comment: 'A provider translates one CLI; HTTP, storage and queueing are for the layers that use it.',
      severity: 'error',
      from: { path: '^src/providers/' },
      to: { path: '^src/(http|store|lanes)/' },
    },
    {
      name: 'http-on-top',
      comment: 'HTTP uses the store, the sessions and the backends; they never depend on HTTP.',
      severity: 'error',
      from: { path: '^src/(store|sessions|backends)/' },
      to: { path: '^src/http/' },
    },
    {
      name: 'schemas-are-leaves',
      comment: 'The wire schemas import only one another and the error vocabulary.',
      severity: 'error',
      from: { path: '^src/schemas/' },
      to: { path: '^src/', pathNot: '^src/(schemas/|errors/kinds\\.ts$)' },
    },
    {
      name: 'error-kinds-are-a-leaf',
      comment: 'The error vocabulary imports nothing of the app, so that everything may import it.',
      severity: 'error',
      from: { path: '^src/errors/kinds\\.ts$' },
      to: { path: '^src/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Follow `import type` too (it is erased before run time, but not from the design).
    tsPreCompilationDeps: true,
  },
};
