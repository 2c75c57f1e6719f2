import {
  credentials,
  Metadata,
  status,
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationQueryServiceClient } from '../../shared/generated/crucible/storage/v1/query_service';
import { BadRequest, ErrorInfo } from '../../shared/generated/google/rpc/error_details';
import { Status } from '../../shared/generated/google/rpc/status';

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (err: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** Calls a generated client's unary method with a deadline: `await call(client, client.getEvaluation, {...})`. */
export function call<Req, Res>(
  client: object,
  method: UnaryMethod<Req, Res>,
  request: Req,
  deadlineMs = 10_000,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, request, new Metadata(), { deadline: new Date(Date.now() + deadlineMs) }, (err, res) => {
      if (err !== null) reject(err);
      else resolve(res);
    });
  });
}

/** Awaits a rejected call and returns its ServiceError (fails if the call succeeded). */
export async function expectError(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** The google.rpc.Status a failed call carried in `grpc-status-details-bin`, if any. */
export function statusDetails(err: ServiceError): {
  badRequest?: BadRequest;
  errorInfo?: ErrorInfo;
  typeUrls: string[];
} {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (raw === undefined || typeof raw === 'string') return { typeUrls: [] };
  const status = Status.decode(raw);
  const result: { badRequest?: BadRequest; errorInfo?: ErrorInfo; typeUrls: string[] } = {
    typeUrls: status.details.map((d) => d.typeUrl),
  };
  for (const detail of status.details) {
    if (detail.typeUrl.endsWith('google.rpc.BadRequest')) result.badRequest = BadRequest.decode(detail.value);
    if (detail.typeUrl.endsWith('google.rpc.ErrorInfo')) result.errorInfo = ErrorInfo.decode(detail.value);
  }
  return result;
}

/**
 * Reads a server stream message by message: `next()` resolves with the next message, or
 * rejects with the stream's error; `end` resolves when the stream finishes.
 */
export interface StreamReader<T> {
  next(): Promise<T>;
  /** Resolves with the final status error (undefined when the stream ended OK). */
  readonly finished: Promise<ServiceError | undefined>;
  cancel(): void;
}

export function readStream<T>(stream: ClientReadableStream<T>): StreamReader<T> {
  const queue: T[] = [];
  const waiters: { resolve: (m: T) => void; reject: (e: Error) => void }[] = [];
  let failure: Error | undefined;
  let resolveFinished: (e: ServiceError | undefined) => void = () => undefined;
  const finished = new Promise<ServiceError | undefined>((resolve) => {
    resolveFinished = resolve;
  });
  stream.on('data', (message: T) => {
    const waiter = waiters.shift();
    if (waiter !== undefined) waiter.resolve(message);
    else queue.push(message);
  });
  const fail = (err: Error): void => {
    failure = err;
    for (const waiter of waiters.splice(0)) waiter.reject(err);
  };
  stream.on('error', (err: ServiceError) => {
    fail(err);
    resolveFinished(err);
  });
  stream.on('end', () => {
    fail(new Error('stream ended'));
    resolveFinished(undefined);
  });
  return {
    next() {
      const message = queue.shift();
      if (message !== undefined) return Promise.resolve(message);
      if (failure !== undefined) return Promise.reject(failure);
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },
    finished,
    cancel: () => stream.cancel(),
  };
}

/** Every message of a server stream until it ends by itself, and its final error (undefined: OK). */
export async function drainStream<T>(
  stream: ClientReadableStream<T>,
): Promise<{ messages: T[]; failed: ServiceError | undefined }> {
  const reader = readStream(stream);
  const messages: T[] = [];
  for (;;) {
    try {
      messages.push(await reader.next());
    } catch {
      break;
    }
  }
  return { messages, failed: await reader.finished };
}

/**
 * Reads a stream of byte chunks (ReadOutput, ReadLogs) to its end: the bytes `chunkOf` takes
 * from each message, concatenated; rejects with the stream's error.
 */
export async function readBytes<T>(
  stream: ClientReadableStream<T>,
  chunkOf: (message: T) => Uint8Array,
): Promise<Buffer> {
  const { messages, failed } = await drainStream(stream);
  if (failed !== undefined) throw failed;
  return Buffer.concat(messages.map((m) => Buffer.from(chunkOf(m))));
}

export interface Clients {
  readonly command: EvaluationCommandServiceClient;
  readonly query: EvaluationQueryServiceClient;
  close(): void;
}

/** Clients of both services; `channel` for TLS, and a caller's token or certificate. */
export function createClients(
  commandAddress: string,
  queryAddress: string,
  channel: ChannelCredentials = credentials.createInsecure(),
): Clients {
  const options = {
    'grpc.max_send_message_length': 64 * 1024 * 1024,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
  };
  const command = new EvaluationCommandServiceClient(commandAddress, channel, options);
  const query = new EvaluationQueryServiceClient(queryAddress, channel, options);
  return {
    command,
    query,
    close() {
      command.close();
      query.close();
    },
  };
}

/** Asks until the call answers (a round trip each time, never a sleep); fails on anything but UNAVAILABLE. */
export async function untilAnswered<T>(
  ask: () => Promise<T>,
  timeoutMs = 10_000,
): Promise<{ answer: T; refusals: number }> {
  const deadline = Date.now() + timeoutMs;
  let refusals = 0;
  for (;;) {
    try {
      return { answer: await ask(), refusals };
    } catch (err) {
      if ((err as { code?: number }).code !== status.UNAVAILABLE || Date.now() > deadline) throw err;
      refusals += 1;
    }
  }
}
