import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  type AppendLogsRequest,
  type AppendLogsResponse,
  EvaluationCommandServiceClient,
} from '../../shared/generated/crucible/storage/v1/command_service';
import { EventType, LogStream } from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceClient,
  type ReadLogsResponse,
  type WatchEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { call, expectError, readStream, statusDetails, type Clients } from '../support/clients';
import { startServices, type RunningServices } from '../support/services';

/** Short, so that a call left open stores its bytes soon (the test waits for them, never sleeps). */
const LOG_FLUSH_MS = 50;

const STDOUT = LogStream.LOG_STREAM_STDOUT;
const STDERR = LogStream.LOG_STREAM_STDERR;

type Message = AppendLogsRequest;
const header = (evalId: string, stream = STDOUT): Message => ({ header: { evalId, stream } });
const chunk = (offset: number, text: string): Message => ({
  chunk: { offset: String(offset), data: Buffer.from(text) },
});

/** An AppendLogs call kept open: messages go out as they are written; `end` resolves with the answer. */
function openAppend(client: EvaluationCommandServiceClient): {
  write(message: Message): void;
  end(): Promise<AppendLogsResponse>;
} {
  let settle: (result: { err: ServiceError | null; response?: AppendLogsResponse }) => void = () => undefined;
  const answered = new Promise<{ err: ServiceError | null; response?: AppendLogsResponse }>((resolve) => {
    settle = resolve;
  });
  const stream = client.appendLogs((err, response) => settle({ err, ...(response !== undefined ? { response } : {}) }));
  return {
    write: (message) => void stream.write(message),
    async end() {
      stream.end();
      const { err, response } = await answered;
      if (err !== null) throw err;
      return response as AppendLogsResponse;
    },
  };
}

function append(client: EvaluationCommandServiceClient, messages: Message[]): Promise<AppendLogsResponse> {
  const call = openAppend(client);
  for (const message of messages) call.write(message);
  return call.end();
}

/** A ReadLogs stream's bytes as they come: `until(n)` waits for n bytes in all, `ended` for the end. */
function follow(
  query: EvaluationQueryServiceClient,
  evalId: string,
  options: { stream?: LogStream; offset?: number } = {},
): { text(): string; until(bytes: number): Promise<void>; ended: Promise<ServiceError | undefined> } {
  const stream = query.readLogs({
    evalId,
    stream: options.stream ?? STDOUT,
    offset: String(options.offset ?? 0),
    length: '0',
    follow: true,
  });
  const parts: Buffer[] = [];
  let received = options.offset ?? 0;
  const waiters: { bytes: number; resolve: () => void }[] = [];
  stream.on('data', (message: ReadLogsResponse) => {
    expect(Number(message.offset), 'each message continues the last').to.equal(received);
    parts.push(Buffer.from(message.data));
    received += message.data.length;
    for (const waiter of waiters.filter((w) => received >= w.bytes)) waiter.resolve();
  });
  const ended = new Promise<ServiceError | undefined>((resolve) => {
    stream.on('error', (err: ServiceError) => resolve(err));
    stream.on('end', () => resolve(undefined));
  });
  return {
    text: () => Buffer.concat(parts).toString(),
    until: (bytes) =>
      received >= bytes ? Promise.resolve() : new Promise((resolve) => waiters.push({ bytes, resolve })),
    ended,
  };
}

async function readLogs(
  query: EvaluationQueryServiceClient,
  evalId: string,
  offset: number,
  length: number,
  stream = STDOUT,
): Promise<string> {
  const reader = readStream<ReadLogsResponse>(
    query.readLogs({ evalId, stream, offset: String(offset), length: String(length), follow: false }),
  );
  const parts: Buffer[] = [];
  for (;;) {
    try {
      parts.push(Buffer.from((await reader.next()).data));
    } catch {
      break;
    }
  }
  const failed = await reader.finished;
  if (failed !== undefined) throw failed;
  return Buffer.concat(parts).toString();
}

describe('e2e: live logs — AppendLogs while running, ReadLogs following them', function () {
  this.timeout(60_000);
  let services: RunningServices;
  let clients: Clients;

  before(async () => {
    services = await startServices({ overrides: { LOG_FLUSH_MS: String(LOG_FLUSH_MS) } });
    clients = services.clients;
  });

  after(async () => {
    await services?.close();
  });

  async function running(evalId: string): Promise<void> {
    const { command, query } = clients;
    await call(command, command.submitEvaluation, {
      evalId,
      code: 'print(1)',
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 30,
      requestId: '',
    });
    const started = await call(command, command.startEvaluation, {
      evalId,
      executorId: 'exec-1',
      containerId: 'c-1',
      requestId: '',
    });
    await call(query, query.getEvaluation, { evalId, minPosition: started.position });
  }

  it('streams appended bytes to a follower as they are stored, retries once, gaps refused, to the end', async () => {
    const { command, query } = clients;
    await running('logs-1');
    const follower = follow(query, 'logs-1');
    const watch = readStream<WatchEvaluationResponse>(query.watchEvaluation({ evalId: 'logs-1' }));

    const first = await append(command, [header('logs-1'), chunk(0, 'line 1\n'), chunk(7, 'line 2\n')]);
    expect(first.size).to.equal('14');
    await follower.until(14);

    // A retry that overlaps what is stored: acknowledged, only the new part kept.
    const retried = await append(command, [header('logs-1'), chunk(0, 'line 1\n'), chunk(7, 'line 2\nline 3\n')]);
    expect(retried.size).to.equal('21');
    await follower.until(21);

    // Past the end: refused, naming the offset to write next; nothing stored.
    const gap = await expectError(append(command, [header('logs-1'), chunk(30, 'lost?\n')]));
    expect(gap.code).to.equal(status.FAILED_PRECONDITION);
    expect(statusDetails(gap).errorInfo?.reason).to.equal('LOG_GAP');
    expect(gap.details).to.include('must start at offset 21, not 30');

    // A call left open stores what it has within LOG_FLUSH_MS: the follower gets it before the call ends.
    const open = openAppend(command);
    open.write(header('logs-1'));
    open.write(chunk(21, 'tick\n'));
    await follower.until(26);
    open.write(chunk(26, 'tock\n'));
    expect((await open.end()).size).to.equal('31');
    await follower.until(31);

    const stderr = await append(command, [header('logs-1', STDERR), chunk(0, 'warning: x\n')]);
    expect(stderr.size).to.equal('11');
    const completed = await call(command, command.completeEvaluation, {
      evalId: 'logs-1',
      exitCode: 0,
      output: Buffer.from('ok'),
      requestId: '',
    });
    expect(await follower.ended, 'the follow ends OK once the evaluation has ended').to.equal(undefined);
    expect(follower.text()).to.equal('line 1\nline 2\nline 3\ntick\ntock\n');

    const { evaluation } = await call(query, query.getEvaluation, {
      evalId: 'logs-1',
      minPosition: completed.position,
    });
    expect([evaluation?.stdoutBytes, evaluation?.stderrBytes]).to.deep.equal(['31', '11']);
    const types: EventType[] = [];
    for (;;) {
      try {
        types.push((await watch.next()).update?.eventType ?? EventType.EVENT_TYPE_UNSPECIFIED);
      } catch {
        break;
      }
    }
    const appended = types.filter((t) => t === EventType.EVENT_TYPE_LOGS_APPENDED).length;
    expect(appended, 'watchers hear of each stored segment, at most one per flush').to.be.within(5, 6);
    expect(await readLogs(query, 'logs-1', 0, 0, STDERR)).to.equal('warning: x\n');
  });

  it('reads a range without following, and refuses an offset past the end, an unknown evaluation, a bad stream', async () => {
    const { command, query } = clients;
    await running('logs-2');
    await append(command, [header('logs-2'), chunk(0, '0123456789')]);
    expect(await readLogs(query, 'logs-2', 3, 4)).to.equal('3456');
    expect(await readLogs(query, 'logs-2', 7, 0)).to.equal('789');
    expect(await readLogs(query, 'logs-2', 10, 0)).to.equal('');
    const past = await expectError(readLogs(query, 'logs-2', 11, 0));
    expect(past.code).to.equal(status.OUT_OF_RANGE);
    expect(past.details).to.include('(10 bytes)');
    expect((await expectError(readLogs(query, 'no-such-eval', 0, 0))).code).to.equal(status.NOT_FOUND);
    const bad = await expectError(readLogs(query, 'logs-2', 0, 0, LogStream.LOG_STREAM_UNSPECIFIED));
    expect(bad.code).to.equal(status.INVALID_ARGUMENT);
    expect(statusDetails(bad).badRequest?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([
      ['stream', 'REQUIRED'],
    ]);
  });

  it('reads and follows a log longer than a window (1 MiB), window after window, every byte once and in order', async () => {
    const { command, query } = clients;
    await running('logs-long');
    const line = (i: number): string => `${String(i).padStart(8, '0')} ${'x'.repeat(55)}\n`; // 64 B
    const text = Array.from({ length: 40_000 }, (_, i) => line(i)).join(''); // 2.5 MB
    const follower = follow(query, 'logs-long');
    const messages = [header('logs-long')];
    for (let at = 0; at < text.length; at += 200_000) messages.push(chunk(at, text.slice(at, at + 200_000)));
    expect(Number((await append(command, messages)).size)).to.equal(text.length);
    expect(await readLogs(query, 'logs-long', 0, 0)).to.equal(text);
    expect(await readLogs(query, 'logs-long', 1_000_000, 1_200_000)).to.equal(text.slice(1_000_000, 2_200_000));
    await follower.until(text.length);
    await call(command, command.completeEvaluation, {
      evalId: 'logs-long',
      output: Buffer.from('done'),
      exitCode: 0,
      requestId: '',
    });
    expect(await follower.ended).to.equal(undefined);
    expect(follower.text()).to.equal(text);
  });

  it('refuses logs of an unknown, a queued evaluation and a call without its header; takes late lines after the end', async () => {
    const { command } = clients;
    const unknown = await expectError(append(command, [header('nobody'), chunk(0, 'x')]));
    expect(unknown.code).to.equal(status.NOT_FOUND);

    await call(command, command.submitEvaluation, {
      evalId: 'logs-queued',
      code: 'print(1)',
      language: 'python',
      engine: 'docker',
      timeoutSeconds: 30,
      requestId: '',
    });
    const queued = await expectError(append(command, [header('logs-queued'), chunk(0, 'x')]));
    expect(queued.code).to.equal(status.FAILED_PRECONDITION);
    expect(statusDetails(queued).errorInfo?.reason).to.equal('LOGS_NOT_STARTED');

    const headless = await expectError(append(command, [chunk(0, 'x')]));
    expect(headless.code).to.equal(status.INVALID_ARGUMENT);
    expect(statusDetails(headless).badRequest?.fieldViolations[0]?.field).to.equal('header');

    await running('logs-late');
    await call(command, command.failEvaluation, {
      evalId: 'logs-late',
      error: 'boom',
      exitCode: 1,
      reason: 0,
      requestId: '',
    });
    const late = await append(command, [header('logs-late', STDERR), chunk(0, 'Traceback: boom\n')]);
    expect(late.size, 'within LOGS_AFTER_TERMINAL_SECONDS of the end').to.equal('16');
  });

  it('serves 1,000 followers of one live log, each every byte once and in order', async function () {
    this.timeout(120_000);
    const { command } = clients;
    await running('logs-many');
    // Four connections of 250 streams each (MAX_STREAMS_PER_CONNECTION is 1,000).
    const connections = Array.from(
      { length: 4 },
      () => new EvaluationQueryServiceClient(services.query.address, credentials.createInsecure()),
    );
    try {
      const followers = Array.from({ length: 1000 }, (_, i) => follow(connections[i % 4] as never, 'logs-many'));
      let offset = 0;
      const lines: string[] = [];
      for (let i = 0; i < 5; i += 1) {
        const line = `${'x'.repeat(100)} line ${i}\n`;
        lines.push(line);
        await append(command, [header('logs-many'), chunk(offset, line)]);
        offset += Buffer.byteLength(line);
        await Promise.all(followers.map((f) => f.until(offset)));
      }
      await call(command, command.completeEvaluation, {
        evalId: 'logs-many',
        exitCode: 0,
        output: Buffer.from('ok'),
        requestId: '',
      });
      const ends = await Promise.all(followers.map((f) => f.ended));
      expect(ends.filter((e) => e !== undefined).map((e) => e?.details)).to.deep.equal([]);
      const expected = lines.join('');
      expect(followers.filter((f) => f.text() !== expected)).to.have.length(0);
    } finally {
      for (const connection of connections) connection.close();
    }
  });
});
