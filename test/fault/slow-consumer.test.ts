import { expect } from 'chai';
import { EvaluationUpdate } from '../../shared/generated/crucible/storage/v1/evaluation';
import { createClients, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import { startPrivateStack, type PrivateStack } from '../support/private-servers';
import {
  describeFailures,
  expectSameAsLog,
  readFirehoseThrough,
  MiB,
  plansFor,
  readEventLog,
  recordFirehose,
  residentBytes,
  startBurst,
  startCommandService,
  startQueryService,
  waitForProjection,
  cancelOpenStreams,
} from './harness';

/** Live messages the server may hold for one stream (the test's STREAM_BUFFER_LIMIT). */
const BUFFER_LIMIT = 20;
/** Each update carries the evaluation's metadata: 240 KiB makes buffering visible in RSS. */
const METADATA = { blob: 'x'.repeat(240 * 1024) };
/**
 * Growth of the query process allowed while its only firehose client reads nothing and it
 * reads a burst of ~850 MiB of updates back from PostgreSQL and Redis. What it may hold at
 * once: one catch-up batch and one tail drain (4 MiB each of event data or updates, a few
 * times that while decoded, encoded and sent to Redis), the fast-path queue (16 MiB), the
 * paused client's 20 messages (5 MiB) and one replay page (4 MiB): about 60 MiB, plus V8's
 * garbage of a burst this size before it collects: 97-116 MiB measured. 200 MiB leaves room
 * for a slower or faster machine and still fails when any of them is held by count alone:
 * with catch-up batches of 500 events and tail reads of 1,000 entries (the sizes before the
 * byte bounds) one batch was 120-240 MiB of data, and this test measured 1,152 MiB of growth.
 */
const RSS_BOUND = 200 * MiB;
/** Commands in the burst: what the paused client must receive is then above RSS_BOUND. */
const BURST = 3600;

describe('fault: a firehose client that stops reading', function () {
  this.timeout(240_000);
  let stack: PrivateStack;
  let commandService: RunningService | undefined;
  let queryService: RunningService | undefined;
  let clients: Clients | undefined;

  before(async () => {
    stack = await startPrivateStack({
      overrides: { STREAM_BUFFER_LIMIT: String(BUFFER_LIMIT), MAX_METADATA_BYTES: String(256 * 1024) },
    });
    commandService = await startCommandService(stack.env);
    queryService = await startQueryService(stack.env);
    clients = createClients(commandService.address, queryService.address);
  });

  after(async () => {
    cancelOpenStreams();
    clients?.close();
    await queryService?.stop();
    await commandService?.stop();
    await stack?.close();
  });

  it('does not grow the server memory without bound, and gets every change once it reads again', async () => {
    if (clients === undefined || queryService === undefined) throw new Error('set-up failed');
    const { command, query } = clients;
    const pid = queryService.pid;

    // Warm up the paths the burst takes (JIT, heap, Redis and PostgreSQL connections).
    const warmUp = startBurst(command, plansFor('warm', 90), { concurrency: 4, metadata: METADATA });
    await warmUp.done;
    expect(warmUp.failures, describeFailures(warmUp.failures)).to.deep.equal([]);
    const warmLog = await readEventLog(stack.databaseUrl);
    await waitForProjection(query, warmLog[warmLog.length - 1]?.position ?? 0n);

    const slow = recordFirehose(query, { afterPosition: '0' });
    await slow.whenCaughtUp();
    slow.call.pause();
    const pausedAt = slow.reached;
    const baseline = residentBytes(pid);

    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, residentBytes(pid));
    }, 100);
    let log: Awaited<ReturnType<typeof readEventLog>>;
    try {
      // The query service sleeps through the burst (SIGSTOP), so that it must read all of it
      // back in batches: its catch-up from PostgreSQL (pub/sub drops a subscriber that far
      // behind), its change-log tail and the paused client's stream, the paths bounded by bytes.
      process.kill(pid, 'SIGSTOP');
      let burst;
      try {
        burst = startBurst(command, plansFor('burst', BURST), { concurrency: 8, metadata: METADATA });
        await burst.done;
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      expect(burst.failures, describeFailures(burst.failures)).to.deep.equal([]);
      log = await readEventLog(stack.databaseUrl);
      await waitForProjection(query, log[log.length - 1]?.position ?? 0n, 120_000);
      peak = Math.max(peak, residentBytes(pid));
    } finally {
      clearInterval(sampler);
    }
    const head = log[log.length - 1]?.position ?? 0n;
    expect(
      peak - baseline,
      `RSS grew from ${(baseline / MiB).toFixed(0)} to ${(peak / MiB).toFixed(0)} MiB`,
    ).to.be.lessThan(RSS_BOUND);

    // Reading again: the stream goes on without a gap, or ends with a resumable error and
    // resuming from the last position received yields the rest.
    slow.call.resume();
    const { updates } = await readFirehoseThrough(query, slow, head);
    expectSameAsLog(updates, log);

    // The bound means something: had the server kept every message for the paused client, it
    // would have held more than the bound (the messages alone, before any overhead).
    const withheld = updates
      .filter((u) => BigInt(u.position) > pausedAt)
      .reduce((n, u) => n + EvaluationUpdate.encode(u).finish().length, 0);
    expect(withheld, 'bytes the paused client had to receive').to.be.greaterThan(RSS_BOUND);
  });
});
