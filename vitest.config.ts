import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // integration suites own real namespaces and daemons: run files one at a time there
    fileParallelism: true,
  },
});
