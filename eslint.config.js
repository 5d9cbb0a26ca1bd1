// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Module boundaries (../shared/STYLE.md): dependencies point one way. */
const forbid = (folder, banned) => ({
  files: [`${folder}/**/*.ts`],
  rules: {
    '@typescript-eslint/no-restricted-imports': [
      'error',
      {
        patterns: banned.map((b) => ({
          group: [`../${b}/*`, `../../${b}/*`],
          // Types cost nothing at run time: a queue step may name the config type it takes.
          allowTypeImports: true,
          message: `${folder}/ may not import ${b}/ (see docs/architecture.md)`,
        })),
      },
    ],
  },
});

export default tseslint.config(
  { ignores: ['node_modules/**', '.cache/**', 'data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': ['error', { allow: ['error', 'warn'] }],
    },
  },
  forbid('crypto', ['gateway', 'queue', 'directory', 'config']),
  forbid('directory', ['gateway', 'queue', 'crypto', 'config']),
  forbid('config', ['gateway', 'queue', 'crypto', 'directory']),
  forbid('queue', ['gateway', 'config']),
  { files: ['test/**/*.ts', 'bench/**/*.ts', 'gateway/cli.ts'], rules: { 'no-console': 'off' } },
);
