import { LogStream } from '../../shared/generated/crucible/storage/v1/evaluation';
import type { ReadLogsResponse } from '../../shared/generated/crucible/storage/v1/query_service';
import { completeRequest, runningEvaluation } from '../support/evaluations';
import { SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { watchPeakMemory } from '../support/memory';
import { figure, type Check, type Measured, type Row } from '../support/report';
import type { BenchContext, Scenario } from '../support/scenario';
import { createBenchStack, startForBytes, type ServiceClients } from '../support/stack';
import { createLatencyRecorder } from '../support/stats';
import { textOutput } from '../../test/support/text';

const MiB = 1024 * 1024;

interface LogsResult {
  readonly appendToReceipt: ReturnType<ReturnType<typeof createLatencyRecorder>['summary']>;
  readonly ackToReceipt: ReturnType<ReturnType<typeof createLatencyRecorder>['summary']>;
  readonly commandGrowthMiB: number;
  readonly queryGrowthMiB: number;
  readonly bytes: number;
  /** Followers whose stream failed (each then stops adding samples: the figures would flatter). */
  readonly failedFollowers: number;
}

/**
 * `writers` executors each append 64 KiB/s to their own evaluation's stdout for `durationMs`:
 * a chunk every 250 ms, four chunks per AppendLogs call (so a call is acknowledged, once its
 * bytes are stored, about once a second), while a follower per evaluation reads the log live.
 * Measured: from a chunk's send to its receipt by the follower (what the service takes to make
 * it durable and readable), and from the call's acknowledgement to the follower's receipt of its
 * last byte (0 when the follower had it first).
 */
async function measureLogs(
  clients: ServiceClients,
  services: { command: number; query: number },
  writers: number,
  durationMs: number,
  inStep: boolean,
): Promise<LogsResult> {
  const chunkBytes = 16 * 1024;
  const appendToReceipt = createLatencyRecorder();
  const ackToReceipt = createLatencyRecorder();
  const evalIds: string[] = [];
  for (let i = 0; i < writers; i += 1) evalIds.push(await runningEvaluation(clients.command, 10_000 + i));
  const commandMemory = watchPeakMemory(services.command);
  const queryMemory = watchPeakMemory(services.query);
  let bytes = 0;
  let failedFollowers = 0;
  const followers = evalIds.map((evalId) => {
    const sentAt = new Map<number, number>(); // end offset of a chunk -> when it was sent
    const ackedAt = new Map<number, number>(); // end offset of a call -> when it was acknowledged
    let received = 0;
    const stream = clients.query.readLogs({
      evalId,
      stream: LogStream.LOG_STREAM_STDOUT,
      offset: '0',
      length: '0',
      follow: true,
    });
    stream.on('data', (m: ReadLogsResponse) => {
      received += m.data.length;
      const now = performance.now();
      for (const [end, at] of sentAt) {
        if (end > received) continue;
        appendToReceipt.recordMs(now - at);
        sentAt.delete(end);
      }
      for (const [end, at] of ackedAt) {
        if (end > received) continue;
        ackToReceipt.recordMs(Math.max(0, now - at));
        ackedAt.delete(end);
      }
    });
    stream.on('error', () => (failedFollowers += 1));
    const ended = new Promise<void>((resolve) => stream.on('close', () => resolve()));
    return { evalId, sentAt, ackedAt, stream, ended, received: () => received };
  });
  const chunk = textOutput(chunkBytes);
  const stopAt = performance.now() + durationMs;
  await Promise.all(
    followers.map(async (follower, i) => {
      // Spread: writer i starts i/writers of a second late, so that the flushes spread over each second.
      if (!inStep) await new Promise((resolve) => setTimeout(resolve, (i * 1000) / writers));
      let offset = 0;
      while (performance.now() < stopAt) {
        let settle: (err: Error | null) => void = () => undefined;
        const answered = new Promise<void>((resolve, reject) => {
          settle = (err) => (err !== null ? reject(err) : resolve());
        });
        const call = clients.command.appendLogs((err) => settle(err));
        call.write({ header: { evalId: follower.evalId, stream: LogStream.LOG_STREAM_STDOUT } });
        for (let i = 0; i < 4; i += 1) {
          if (i > 0) await new Promise((resolve) => setTimeout(resolve, 250));
          follower.sentAt.set(offset + chunkBytes, performance.now());
          call.write({ chunk: { offset: String(offset), data: chunk } });
          offset += chunkBytes;
          bytes += chunkBytes;
        }
        // Ended with its last chunk (the writer's next chunk comes 250 ms later, in the next call).
        const endedAt = performance.now();
        call.end();
        await answered;
        // The follower may have had the bytes first (it is woken by the commit's announcement,
        // which can beat the answer): that is 0, not the wait for its next receipt.
        if (follower.received() >= offset) ackToReceipt.recordMs(0);
        else follower.ackedAt.set(offset, performance.now());
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, 250 - (performance.now() - endedAt))));
      }
    }),
  );
  for (const follower of followers) {
    await unary(
      clients.command,
      clients.command.completeEvaluation,
      completeRequest(follower.evalId),
      SETUP_DEADLINE_MS,
    );
  }
  await Promise.all(followers.map((f) => f.ended));
  return {
    appendToReceipt: appendToReceipt.summary(),
    ackToReceipt: ackToReceipt.summary(),
    commandGrowthMiB: commandMemory.stop().growthMiB,
    queryGrowthMiB: queryMemory.stop().growthMiB,
    bytes,
    failedFollowers,
  };
}

export const liveLogs: Scenario = {
  name: 'live-logs',
  description:
    'many executors appending 64 KiB/s each to their logs (flushing in step, then spread over each second), a follower reading each log live',
  async run(ctx: BenchContext) {
    const smoke = ctx.smoke;
    const stack = await createBenchStack(ctx, { LOG_FLUSH_MS: '1000' });
    try {
      const { command, query, clients, closeClients } = await startForBytes(stack);
      const rows: Row[] = [];
      const checks: Check[] = [];
      const notes: string[] = [];
      try {
        const writers = smoke ? 10 : 100;
        const durationMs = smoke ? 3000 : 20_000;
        const latency = (name: string, s: LogsResult['appendToReceipt']): Measured => ({
          name,
          figures: [figure('p50', s.p50Ms, 'ms'), figure('p99', s.p99Ms, 'ms'), figure('max', s.maxMs, 'ms')],
        });
        // In step (every writer flushes in the same few ms: the worst case, which the targets
        // are judged on), then spread over the second as independent executors would be.
        for (const inStep of [true, false]) {
          const phase = inStep ? 'in step' : 'spread';
          ctx.progress(
            `live logs: ${writers} writers (${phase}) appending 64 KiB/s for ${durationMs / 1000} s, a follower each`,
          );
          const logs = await measureLogs(
            clients,
            { command: command.pid, query: query.pid },
            writers,
            durationMs,
            inStep,
          );
          rows.push({
            scenario: 'live logs: AppendLogs → ReadLogs (follow)',
            case: `${writers} writers × 64 KiB/s, ${phase}, ${durationMs / 1000} s`,
            subject: latency('ack → follower', logs.ackToReceipt),
            floors: [latency('append → follower (durable, readable)', logs.appendToReceipt)],
          });
          checks.push({
            target: `Live logs (${phase}): every follower reads to the end`,
            actual: `${logs.failedFollowers} of ${writers} failed`,
            met: logs.failedFollowers === 0,
          });
          if (inStep) {
            checks.push(
              {
                target: `AppendLogs, ${writers} writers at 64 KiB/s in step: p99 acknowledgement → follower ≤ 50 ms`,
                actual: `${logs.ackToReceipt.p99Ms.toFixed(1)} ms`,
                met: logs.ackToReceipt.p99Ms <= 50,
              },
              {
                target: `AppendLogs, ${writers} writers at 64 KiB/s in step: p99 append → durable (a follower has it) ≤ 1,100 ms`,
                actual: `${logs.appendToReceipt.p99Ms.toFixed(0)} ms`,
                met: logs.appendToReceipt.p99Ms <= 1100,
              },
            );
          }
          notes.push(
            `Live logs, ${phase}: ${(logs.bytes / MiB).toFixed(1)} MiB appended; peak RSS growth command +${logs.commandGrowthMiB.toFixed(0)} MiB, query +${logs.queryGrowthMiB.toFixed(0)} MiB.`,
          );
        }
        notes.push('Live logs: a call carries four 16 KiB chunks sent 250 ms apart; LOG_FLUSH_MS is 1,000.');
        return { rows, checks, notes };
      } finally {
        closeClients();
      }
    } finally {
      await stack.close();
    }
  },
};
