import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Transpile like tsc (target ES2022: native class fields), so tests run the code shapes production runs;
  // down-levelled class fields change V8's field representations (an allocation per frame in the switch).
  esbuild: { target: 'es2022' },
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // e2e tests boot TCG guests: run files one at a time so two guests never fight for the 2 cores.
    fileParallelism: false,
  },
});
