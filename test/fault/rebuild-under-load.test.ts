import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import type { Clients } from '../support/clients';
import {
  describeFailures,
  expectReadModelsEqualLog,
  expectSameAsLog,
  plansFor,
  readEventLog,
  readFirehoseThrough,
  recordFirehose,
  runConsistencyChecker,
  startBurst,
  startFaultStack,
  waitForProjection,
  type FaultStack,
} from './harness';

const run = promisify(execFile);
const REBUILD = join(__dirname, '..', '..', 'services', 'query', 'cli', 'rebuild.js');

describe('fault: the rebuild CLI runs again and again while two replicas project a burst', function () {
  this.timeout(240_000);
  let f: FaultStack;

  before(async () => {
    f = await startFaultStack({ replicas: 2 });
  });

  after(async () => {
    await f?.close();
  });

  it('ends with the checker clean every time, and a firehose sees every change once, in order', async () => {
    const { stack, clients } = f;
    const [first, second] = clients as [Clients, Clients];
    const firehose = recordFirehose(second.query, { afterPosition: '0' });
    await firehose.whenCaughtUp();
    const burst = startBurst(first.command, plansFor('rebuilt', 1500), { concurrency: 8 });
    const rebuilds: string[] = [];
    for (let round = 1; round <= 3; round += 1) {
      await burst.whenSucceeded(round * 300);
      // The fence keeps the replicas' writes out while the rebuild deletes and rewrites.
      const { stdout } = await run(process.execPath, [REBUILD], { env: { ...process.env, ...stack.env } });
      rebuilds.push(stdout.trim().split('\n').pop() ?? '');
      // Exact while the projection runs: each partition is compared up to its own checkpoint.
      const check = await runConsistencyChecker(stack.env);
      expect(check.code, `after rebuild ${round}:\n${check.output}`).to.equal(0);
    }
    await burst.done;
    expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);
    for (const line of rebuilds) expect(line).to.match(/^deleted \d+ keys; rebuilt \d+ events/);

    const log = await readEventLog(stack.databaseUrl);
    const head = log[log.length - 1]?.position ?? 0n;
    for (const c of clients) await waitForProjection(c.query, head, 60_000);
    await expectReadModelsEqualLog(stack.env, stack.databaseUrl);
    const { updates } = await readFirehoseThrough(second.query, firehose, head);
    expectSameAsLog(updates, log);
  });
});
