import type { ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import {
  EvaluationQueryServiceClient,
  type WatchEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { closeAll, createClients } from './grpc';
import { wallClockMs } from './progress';
import type { ToWatchers, FromWatchers } from './watchers';

/**
 * Entry point (forked by watchers.ts): holds many WatchEvaluation streams in a process of its
 * own, so that decoding thousands of messages is not done on the bench's event loop, and
 * reports, for each revision, when the last stream received it (wall clock).
 */
let clients: EvaluationQueryServiceClient[] = [];
const streams: ClientReadableStream<WatchEvaluationResponse>[] = [];
const arrivals = new Map<string, number[]>();
let expected: string | undefined;
let closing = false;

const send = (message: FromWatchers): void => void process.send!(message);

function arrived(revision: string): void {
  const times = arrivals.get(revision) ?? [];
  times.push(wallClockMs());
  arrivals.set(revision, times);
  report();
}

function report(): void {
  if (expected === undefined) return;
  const times = arrivals.get(expected);
  if (times === undefined || times.length < streams.length) return;
  const sorted = [...times].sort((a, b) => a - b);
  send({
    type: 'received',
    revision: expected,
    firstAt: sorted[0]!,
    medianAt: sorted[Math.floor(sorted.length / 2)]!,
    lastAt: sorted[sorted.length - 1]!,
  });
  expected = undefined;
}

function open(address: string, evalId: string, count: number, perConnection: number): void {
  const started = performance.now();
  clients = createClients(EvaluationQueryServiceClient, address, Math.ceil(count / perConnection));
  let initial = 0;
  for (let i = 0; i < count; i++) {
    const stream = clients[Math.floor(i / perConnection)]!.watchEvaluation({ evalId });
    let first = true;
    stream.on('data', (message: WatchEvaluationResponse) => {
      if (message.update === undefined) return;
      if (first) {
        first = false;
        if (++initial === count) send({ type: 'ready', seconds: (performance.now() - started) / 1000 });
        return;
      }
      arrived(message.update.revision);
    });
    stream.on('error', (err: ServiceError) => {
      if (!closing) send({ type: 'error', message: `stream ${i}: ${err.code} ${err.details}` });
    });
    streams.push(stream);
  }
}

// The bench went away: nothing to report to.
process.on('disconnect', () => process.exit(0));

process.on('message', (message: ToWatchers) => {
  switch (message.type) {
    case 'open':
      open(message.address, message.evalId, message.streams, message.perConnection);
      break;
    case 'expect':
      expected = message.revision;
      report();
      break;
    case 'close':
      closing = true;
      for (const stream of streams) stream.cancel();
      closeAll(clients);
      process.exit(0);
  }
});
