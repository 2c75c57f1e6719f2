import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';

/**
 * Fails when shared/generated/ is not exactly what `npm run generate` makes from proto/.
 *
 * It runs that very script (read from package.json, so the two cannot drift apart) in a copy
 * of the proto and buf files in a temporary directory, then compares every file, the
 * descriptor set crucible.binpb included. The checkout itself is never written.
 */

const GENERATED = join('shared', 'generated');
const BUF_FILES = ['buf.yaml', 'buf.gen.yaml', 'buf.lock'];

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1))
    .sort();
}

interface Drift {
  readonly changed: string[];
  readonly missing: string[];
  readonly extra: string[];
}

function compare(committed: string, fresh: string): Drift & { readonly files: number } {
  const committedFiles = listFiles(committed);
  const freshFiles = listFiles(fresh);
  const committedSet = new Set(committedFiles);
  const freshSet = new Set(freshFiles);
  return {
    files: freshFiles.length,
    missing: freshFiles.filter((f) => !committedSet.has(f)),
    extra: committedFiles.filter((f) => !freshSet.has(f)),
    changed: freshFiles.filter(
      (f) => committedSet.has(f) && !readFileSync(join(committed, f)).equals(readFileSync(join(fresh, f))),
    ),
  };
}

function main(): number {
  const root = resolve(__dirname, '..', '..');
  const packageJson = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    scripts?: Record<string, string>;
  };
  const script = packageJson.scripts?.generate;
  if (script === undefined) {
    process.stderr.write('check-generated: package.json has no "generate" script\n');
    return 1;
  }
  const temp = mkdtempSync(join(tmpdir(), 'crucible-generated-'));
  try {
    cpSync(join(root, 'proto'), join(temp, 'proto'), { recursive: true });
    for (const file of BUF_FILES) if (existsSync(join(root, file))) cpSync(join(root, file), join(temp, file));
    // buf.gen.yaml names the ts-proto plugin by its path under node_modules/.
    symlinkSync(join(root, 'node_modules'), join(temp, 'node_modules'), 'dir');
    const result = spawnSync('sh', ['-c', script], {
      cwd: temp,
      env: { ...process.env, PATH: [join(root, 'node_modules', '.bin'), process.env.PATH ?? ''].join(delimiter) },
      encoding: 'utf8',
    });
    if (result.status !== 0) {
      process.stderr.write(
        `check-generated: \`${script}\` failed in a copy of proto/ (${result.error?.message ?? `exit ${String(result.status)}`}):\n` +
          `${result.stdout}${result.stderr}`,
      );
      return 1;
    }
    const drift = compare(join(root, GENERATED), join(temp, GENERATED));
    const lines = [
      ...drift.changed.map((f) => `  changed:   ${join(GENERATED, f)}`),
      ...drift.missing.map((f) => `  missing:   ${join(GENERATED, f)} (would be generated)`),
      ...drift.extra.map((f) => `  extra:     ${join(GENERATED, f)} (no longer generated)`),
    ];
    if (lines.length > 0) {
      process.stderr.write(
        `check-generated: ${GENERATED}/ does not match proto/:\n${lines.join('\n')}\n` +
          'Run `npm run generate` (or `make generate`) and commit the result; never edit generated files.\n',
      );
      return 1;
    }
    process.stdout.write(`check-generated: ${GENERATED}/ matches proto/ (${drift.files} files)\n`);
    return 0;
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
}

process.exitCode = main();
