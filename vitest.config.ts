import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests start real SMTP servers, Redis queues and child processes.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // 2-core machines: more parallel files only add contention to the real servers under test.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
