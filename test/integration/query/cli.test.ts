import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'chai';
import { createKeyLayout } from '../../../services/query/read-models/keys';
import { scanKeys } from '../../../shared/redis';
import { createQueryHarness, type QueryHarness } from './harness';

const CLI = join(__dirname, '..', '..', '..', 'services', 'query', 'cli');

/** Runs a compiled CLI with the spec's environment; resolves with its exit code and output. */
function run(
  script: string,
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(CLI, script)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('query CLIs: rebuild-read-models and check-consistency', function () {
  this.timeout(60_000);
  let h: QueryHarness;

  before(async () => {
    h = await createQueryHarness({ READ_MODEL_PARTITIONS: '2' });
    for (let i = 0; i < 40; i += 1) {
      await h.writer.submit(`cli-${i}`);
      if (i % 2 === 0) await h.writer.start(`cli-${i}`);
    }
  });
  after(async () => {
    await h.close();
  });

  it('rebuilds from an empty Redis, after which the checker finds no difference', async () => {
    const rebuilt = await run('rebuild.js', h.env.env);
    expect(rebuilt.code, rebuilt.stderr).to.equal(0);
    expect(rebuilt.stdout).to.match(/rebuilt 60 events up to position 60 in [\d.]+ s \(\d+ events\/s\)/);
    const checked = await run('check-consistency.js', h.env.env);
    expect(checked.code, checked.stdout + checked.stderr).to.equal(0);
    expect(checked.stdout).to.contain('checked 40 evaluations at checkpoints 60, 60: no differences');
  });

  it('reports every difference and exits 1', async () => {
    const layout = createKeyLayout(h.config.redisKeyPrefix, 2);
    await h.redis.del(layout.record(layout.partitionOf('cli-4'), 'cli-4'));
    await h.redis.rpush(layout.history(layout.partitionOf('cli-5'), 'cli-5'), 'junk');
    const checked = await run('check-consistency.js', h.env.env);
    expect(checked.code).to.equal(1);
    expect(checked.stdout).to.contain('cli-4: record missing');
    expect(checked.stdout).to.contain('cli-5: history has 2 updates, expected 1');
    const again = await run('rebuild.js', h.env.env);
    expect(again.code).to.equal(0);
    expect((await run('check-consistency.js', h.env.env)).code).to.equal(0);
  });

  it('applies a changed READ_MODEL_PARTITIONS: the rebuild re-homes every evaluation, nothing of the old layout is left', async () => {
    const before = createKeyLayout(h.config.redisKeyPrefix, 2);
    const after = createKeyLayout(h.config.redisKeyPrefix, 5);
    const moved = Array.from({ length: 40 }, (_, i) => `cli-${i}`).filter(
      (id) => before.partitionOf(id) !== after.partitionOf(id),
    );
    expect(moved.length, 'evaluations whose partition changes').to.be.above(0);
    const env = { ...h.env.env, READ_MODEL_PARTITIONS: '5' };
    const rebuilt = await run('rebuild.js', env);
    expect(rebuilt.code, rebuilt.stderr).to.equal(0);
    const checked = await run('check-consistency.js', env);
    expect(checked.code, checked.stdout + checked.stderr).to.equal(0);
    expect(checked.stdout).to.contain('checked 40 evaluations at checkpoints 60, 60, 60, 60, 60: no differences');
    // Every read-model key is of a partition of the new layout, each evaluation's record in its new one.
    const keys: string[] = [];
    for await (const found of scanKeys(h.redis, before.scanPattern, 1000)) keys.push(...found);
    const partitionsSeen = new Set(keys.map((key) => after.describe(key)?.partition));
    expect(
      [...partitionsSeen].every((p) => p !== undefined && p < 5),
      [...partitionsSeen].join(),
    ).to.equal(true);
    for (const id of moved) {
      expect(await h.redis.exists(after.record(after.partitionOf(id), id)), `${id} in its new partition`).to.equal(1);
      expect(await h.redis.exists(before.record(before.partitionOf(id), id)), `${id} in its old partition`).to.equal(0);
    }
  });

  it('applies a lowered READ_MODEL_PARTITIONS: the keys of the partitions that no longer exist are gone', async () => {
    const wider = createKeyLayout(h.config.redisKeyPrefix, 5);
    const narrower = createKeyLayout(h.config.redisKeyPrefix, 2);
    await run('rebuild.js', { ...h.env.env, READ_MODEL_PARTITIONS: '5' });
    const rebuilt = await run('rebuild.js', h.env.env);
    expect(rebuilt.code, rebuilt.stderr).to.equal(0);
    const checked = await run('check-consistency.js', h.env.env);
    expect(checked.code, checked.stdout + checked.stderr).to.equal(0);
    const keys: string[] = [];
    for await (const found of scanKeys(h.redis, wider.scanPattern, 1000)) keys.push(...found);
    const stale = keys.filter((key) => (wider.describe(key)?.partition ?? 0) >= 2);
    expect(stale, 'keys of partitions 2-4').to.deep.equal([]);
    expect(keys.every((key) => narrower.describe(key) !== undefined)).to.equal(true);
  });
});
