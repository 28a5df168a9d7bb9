import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // e2e tests boot TCG guests: run files one at a time so two guests never fight for the 2 cores.
    fileParallelism: false,
  },
});
