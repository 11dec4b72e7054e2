// The layering of shared/design.md ("who decides, who executes"), checked on every `npm run lint`.
// Type-only imports count: a type pulled across a layer couples the layers all the same.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'plan-and-machines-are-pure',
      comment: 'The planner and the node statechart decide from data: no driver, no store.',
      severity: 'error',
      from: { path: '^(src/plan|machines)/' },
      to: { path: '^src/(drivers|store)/' },
    },
    {
      name: 'drivers-do-not-drive-the-loop',
      comment:
        'Drivers execute what they are asked; the reconciler and the CLI call them, never the reverse.',
      severity: 'error',
      from: { path: '^src/drivers/' },
      to: { path: '^src/(reconcile|cli)/' },
    },
    {
      name: 'store-and-spec-know-no-driver',
      comment: 'What is stored and what is specified do not depend on how the world is reached.',
      severity: 'error',
      from: { path: '^src/(store|spec)/' },
      to: { path: '^src/drivers/' },
    },
    {
      name: 'shipped-code-imports-no-test-code',
      comment: 'dist/ is built from src and machines only; tests and benches stay out of it.',
      severity: 'error',
      from: { path: '^(src|machines)/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.typecheck.json' },
    exclude: { path: '^(dist|dist-bench)/' },
  },
};
