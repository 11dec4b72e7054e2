// The layering of shared/design.md ("who decides, who executes"), checked on every `npm run lint`.
// Type-only imports count: a type pulled across a layer couples the layers all the same.
const forbid = (name, comment, from, to) => ({
  name,
  comment,
  severity: 'error',
  from: { path: from },
  to: { path: to },
});

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    forbid(
      'plan-and-machines-are-pure',
      'The planner and the node statechart decide from data: no driver, no store.',
      '^(src/plan|machines)/',
      '^src/(drivers|store)/',
    ),
    forbid(
      'drivers-do-not-drive-the-loop',
      'Drivers execute what they are asked; the reconciler and the CLI call them, never the reverse.',
      '^src/drivers/',
      '^src/(reconcile|cli)/',
    ),
    forbid(
      'store-and-spec-know-no-driver',
      'What is stored and what is specified do not depend on how the world is reached.',
      '^src/(store|spec)/',
      '^src/drivers/',
    ),
    forbid(
      'shipped-code-imports-no-test-code',
      'dist/ is built from src and machines only; tests and benches stay out of it.',
      '^(src|machines)/',
      '^(test|bench)/',
    ),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.typecheck.json' },
    exclude: { path: '^(dist|dist-bench)/' },
  },
};
