import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { ANONYMOUS_ADMIN } from '../../../shared/auth';
import type { LogStream } from '../../../shared/domain';
import type { CallContext, StreamSink } from '../../../shared/grpc';
import {
  EvaluationStatus,
  EvaluationUpdate,
  LogStream as LogStreamWire,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { ReadLogsResponse } from '../../../shared/generated/crucible/storage/v1/query_service';
import { createReadLogs, type LogState, type StoredLogs } from '../../../services/query/handlers/read-logs';
import { createChangeHub, type ChangeHub } from '../../../services/query/live/change-hub';
import { createLogHints } from '../../../services/query/live/log-hints';
import { createOpenCalls } from '../../../services/query/live/open-calls';
import { createShutdown } from '../../../services/query/live/shutdown';
import { encodeOnce } from '../../../services/query/wire/encoded';

const RUNNING = EvaluationStatus.EVALUATION_STATUS_RUNNING;
const COMPLETED = EvaluationStatus.EVALUATION_STATUS_COMPLETED;

/** One evaluation's stdout in memory, as PostgreSQL would hold it; counts the reads made of it. */
function memoryLog() {
  let log = Buffer.alloc(0);
  let ended = false;
  const reads: { from: number; to: number }[] = [];
  const stored: StoredLogs = {
    read(_tenant, evalId, _stream: LogStream, from, to) {
      reads.push({ from, to });
      if (evalId !== 'e-1') return Promise.resolve('unknown-evaluation');
      const state: LogState = { size: log.length, ended };
      const end = Math.min(to, log.length);
      const parts = from < end ? [{ offset: from, length: end - from, bytes: log.subarray(from, end) }] : [];
      return Promise.resolve({ state, parts });
    },
  };
  return {
    stored,
    reads,
    append(text: string) {
      log = Buffer.concat([log, Buffer.from(text)]);
      return log.length;
    },
    end() {
      ended = true;
    },
  };
}

/**
 * Lets the follower run until it waits again: every step it takes here (reads of the memory log,
 * writes to the sink) is an already resolved promise, so one turn of the event loop parks it.
 */
const parked = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The change of e-1 the tail would dispatch: its status and stdout size at `position`. */
function publish(hub: ChangeHub, position: bigint, status: EvaluationStatus, stdoutBytes: number): void {
  const update = encodeOnce(
    EvaluationUpdate,
    EvaluationUpdate.fromPartial({
      position: String(position),
      evaluation: { evalId: 'e-1', status, stdoutBytes: String(stdoutBytes) },
    }),
  );
  hub.publish({ position, revision: position, evalId: 'e-1', status, tenant: 'default', update });
}

describe('ReadLogs: following a live log', () => {
  it('reads again on a hint, and on a change only when it shows bytes not sent yet or the end', async () => {
    const log = memoryLog();
    const hub = createChangeHub();
    const logHints = createLogHints();
    const readLogs = createReadLogs({
      logs: log.stored,
      blobs: () => {
        throw new Error('no blob in this log');
      },
      hub,
      logHints,
      openCalls: createOpenCalls({ maxOpen: 10, maxOpenPerConnection: 10 }),
      shutdown: createShutdown().shutdown,
    });
    const received: string[] = [];
    const written: { n: number; resolve: () => void }[] = [];
    const sink: StreamSink<ReadLogsResponse> = {
      pending: 0,
      write(message) {
        received.push(Buffer.from(message.data).toString());
        for (const w of written.filter((w) => received.join('').length >= w.n)) w.resolve();
        return Promise.resolve();
      },
    };
    const bytesSent = (n: number): Promise<void> =>
      new Promise((resolve) => (received.join('').length >= n ? resolve() : written.push({ n, resolve })));
    const context: CallContext = {
      caller: ANONYMOUS_ADMIN,
      signal: new AbortController().signal,
      deadline: undefined,
      metadata: new Metadata(),
      peer: 'p',
    };

    log.append('first\n');
    const call = readLogs(
      { evalId: 'e-1', stream: LogStreamWire.LOG_STREAM_STDOUT, offset: '0', length: '0', follow: true },
      sink,
      context,
    );
    await bytesSent(6);
    await parked();
    expect(log.reads).to.have.length(1);

    // An append's hint reads at once; its change, applied later, shows nothing new: no read.
    const size = log.append('second\n');
    logHints.hint('e-1', 'stdout');
    await bytesSent(size);
    await parked();
    expect(log.reads).to.have.length(2);
    publish(hub, 2n, RUNNING, size);
    logHints.hint('another-evaluation', 'stdout');
    logHints.hint('e-1', 'stderr');
    await parked();
    expect(log.reads, 'no read for a change that shows nothing new, nor for a hint of another log').to.have.length(2);

    // A change that shows bytes not sent (its hint was lost) reads them.
    const more = log.append('third\n');
    publish(hub, 3n, RUNNING, more);
    await bytesSent(more);
    await parked();
    expect(log.reads, 'one read for the hint, none for its change, one for the change with more').to.have.length(3);

    // The end, whatever the size it shows, reads what is left and ends the call.
    log.end();
    publish(hub, 4n, COMPLETED, more);
    await call;
    expect(log.reads).to.have.length(4);
    // A whole window to start with, then the little a caught-up follower asks for.
    expect(log.reads.map((r) => r.to - r.from)).to.deep.equal([1024 * 1024, 256 * 1024, 256 * 1024, 256 * 1024]);
    expect(received.join('')).to.equal('first\nsecond\nthird\n');
    expect(hub.listenerCount, 'the hub listener is gone').to.equal(0);
  });
});
