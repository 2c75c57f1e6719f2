// @ts-check
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * Architecture, enforced (STYLE.md "Layout shows the architecture"): the two services share
 * only shared/, and domain code imports no driver or transport.
 */
const otherService = (/** @type {'command' | 'query'} */ other) => ({
  // ../query, ../../query/x, ../../services/query/x — but not ../../shared/query.
  regex: `^(\\.\\./)+(services/)?${other}(/|$)`,
  message: `services must not import each other (here: the ${other} service); share through shared/`,
});
const DRIVERS = [
  { regex: '^(typeorm|pg|ioredis)(/|$)', message: 'domain code is pure: no database or Redis driver (declare a port)' },
  { regex: '^@aws-sdk/', message: 'domain code is pure: no S3 client (declare a port)' },
  { regex: '^@grpc/', message: 'domain code is pure: no gRPC (errors are mapped in the transport)' },
];
const restrictImports = (/** @type {object[]} */ patterns) => ({
  'no-restricted-imports': ['error', { patterns }],
});

/** A spec narrowed to `.only` must not reach CI (mocha's forbid-only also checks at run time). */
const ONLY = ['describe', 'context', 'suite', 'it', 'specify', 'test'].map((object) => ({
  object,
  property: 'only',
  message: 'remove .only before committing',
}));

export default tseslint.config(
  { ignores: ['dist/', 'shared/generated/', 'node_modules/', '.data/'] },
  eslint.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-properties': ['error', ...ONLY],
      // Protobuf enums arrive from the wire as plain numbers that may be outside the enum
      // (unknown values); comparing that number with enum members is the check itself.
      '@typescript-eslint/no-unsafe-enum-comparison': 'off',
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      // Tests and benchmarks pass generated client methods to the `call(client, client.method, ...)` helper,
      // which invokes them with `this` = client; the rule cannot see that.
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  { files: ['**/*.mjs'], ...tseslint.configs.disableTypeChecked },
  // A later block replaces an earlier one's options for the same rule, so each lists everything.
  { files: ['services/command/**/*.ts'], rules: restrictImports([otherService('query')]) },
  { files: ['services/query/**/*.ts'], rules: restrictImports([otherService('command')]) },
  { files: ['services/command/domain/**/*.ts'], rules: restrictImports([otherService('query'), ...DRIVERS]) },
  { files: ['services/query/domain/**/*.ts'], rules: restrictImports([otherService('command'), ...DRIVERS]) },
  { files: ['shared/domain/**/*.ts'], rules: restrictImports(DRIVERS) },
);
