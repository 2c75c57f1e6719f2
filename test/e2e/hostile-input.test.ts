import { connect } from 'node:http2';
import { Client, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { MAX_METADATA_DEPTH } from '../../services/command/domain/validate';
import { CompleteEvaluationStreamRequest } from '../../shared/generated/crucible/storage/v1/command_service';
import { EvaluationStatus } from '../../shared/generated/crucible/storage/v1/evaluation';
import type {
  WatchEvaluationResponse,
  WatchEvaluationsResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { call, expectError, readStream, statusDetails, type Clients } from '../support/clients';
import type { RunningService } from '../support/processes';
import {
  COMMAND_SERVICE as COMMAND,
  QUERY_SERVICE as QUERY,
  startServices,
  type RunningServices,
} from '../support/services';

const submission = (overrides: Record<string, unknown> = {}) => ({
  evalId: '',
  code: 'print("hostile")',
  language: 'python',
  engine: 'docker',
  timeoutSeconds: 30,
  metadata: { suite: 'hostile' },
  requestId: '',
  ...overrides,
});

/** Objects nested `depth` levels deep (`{leaf}` is one level), built in a loop. */
function nestedObjects(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = { leaf: 'x' };
  for (let i = 1; i < depth; i += 1) value = { level: value };
  return value;
}

/** A field 1 that announces 127 bytes and holds one: no protobuf decoder takes it. */
const GARBAGE = Buffer.from([0x0a, 0x7f, 0x01]);

const identity = (bytes: Buffer): Buffer => bytes;

/** A deadline for the raw calls: none of them may hang. */
const soon = (): { deadline: number } => ({ deadline: Date.now() + 10_000 });

/** The [field, rule] pairs of a failed call's google.rpc.BadRequest. */
const violationsOf = (err: ServiceError): [string, string][] =>
  (statusDetails(err).badRequest?.fieldViolations ?? []).map((v) => [v.field, v.reason]);

/**
 * What the command side accepts, a standard client can read back; what a server cannot decode
 * is the caller's error (INVALID_ARGUMENT), not the server's (INTERNAL). Both services run as
 * processes; the raw calls go through a grpc-js client with identity serialisers, or through
 * HTTP/2 itself for broken frames.
 */
describe('e2e: hostile input is INVALID_ARGUMENT, and what is accepted is readable', function () {
  this.timeout(60_000);
  let services: RunningServices;
  let commandService: RunningService;
  let queryService: RunningService;
  let clients: Clients;
  let raw: { command: Client; query: Client };

  before(async () => {
    services = await startServices();
    ({ command: commandService, query: queryService, clients } = services);
    raw = {
      command: new Client(commandService.address, credentials.createInsecure()),
      query: new Client(queryService.address, credentials.createInsecure()),
    };
  });

  after(async () => {
    raw?.command.close();
    raw?.query.close();
    await services?.close();
  });

  function rawUnary(client: Client, path: string, request: Buffer): Promise<ServiceError> {
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(path, identity, identity, request, new Metadata(), soon(), (err) => {
        if (err !== null) resolve(err);
        else reject(new Error(`${path} answered OK to bytes that are not its request`));
      });
    });
  }

  it(`refuses metadata nested deeper than ${MAX_METADATA_DEPTH} levels as metadata TOO_DEEP (33 levels used to be accepted, then unreadable)`, async () => {
    const { command } = clients;
    for (const depth of [MAX_METADATA_DEPTH + 1, 33]) {
      const err = await expectError(
        call(command, command.submitEvaluation, submission({ metadata: nestedObjects(depth) })),
      );
      expect(err.code, `depth ${depth}`).to.equal(status.INVALID_ARGUMENT);
      expect(violationsOf(err), `depth ${depth}`).to.deep.equal([['metadata', 'TOO_DEEP']]);
    }
  });

  it('refuses metadata nested beyond what the protobuf decoder takes as INVALID_ARGUMENT, not INTERNAL', async () => {
    const { command } = clients;
    const err = await expectError(call(command, command.submitEvaluation, submission({ metadata: nestedObjects(40) })));
    expect(err.code).to.equal(status.INVALID_ARGUMENT);
    expect(violationsOf(err)).to.deep.equal([['', 'MALFORMED']]);
    expect(err.details).to.match(/SubmitEvaluation.*not a valid protobuf.*recursion limit/);
  });

  it(`reads metadata ${MAX_METADATA_DEPTH} levels deep back through every query, with a standard (ts-proto) client`, async () => {
    const { command, query } = clients;
    const metadata = { ...nestedObjects(MAX_METADATA_DEPTH), list: [[[{ in: ['lists'] }]]] };
    const submitted = await call(command, command.submitEvaluation, submission({ metadata }));

    const got = await call(query, query.getEvaluation, { evalId: submitted.evalId, minPosition: submitted.position });
    expect(got.evaluation?.metadata).to.deep.equal(metadata);

    const listed = await call(query, query.listEvaluations, {
      status: EvaluationStatus.EVALUATION_STATUS_QUEUED,
      pageSize: 1000,
      pageToken: '',
      minPosition: submitted.position,
    });
    expect(listed.evaluations.find((e) => e.evalId === submitted.evalId)?.metadata).to.deep.equal(metadata);

    const one = readStream<WatchEvaluationResponse>(query.watchEvaluation({ evalId: submitted.evalId }));
    const all = readStream<WatchEvaluationsResponse>(
      query.watchEvaluations({
        afterPosition: String(BigInt(submitted.position) - 1n),
        statuses: [],
        evalIds: [submitted.evalId],
      }),
    );
    try {
      for (const stream of [one, all]) {
        let message = await stream.next();
        while (message.update === undefined) message = await stream.next();
        expect(message.update.evaluation?.metadata).to.deep.equal(metadata);
      }
    } finally {
      one.cancel();
      all.cancel();
    }
  });

  it('refuses bytes that are not protobuf as INVALID_ARGUMENT on unary, client-stream and server-stream calls', async () => {
    const submit = await rawUnary(raw.command, `/${COMMAND}/SubmitEvaluation`, GARBAGE);
    expect(submit.code).to.equal(status.INVALID_ARGUMENT);
    expect(violationsOf(submit)).to.deep.equal([['', 'MALFORMED']]);
    expect(submit.details).to.match(/SubmitEvaluation.*not a valid protobuf/);

    const get = await rawUnary(raw.query, `/${QUERY}/GetEvaluation`, GARBAGE);
    expect(get.code).to.equal(status.INVALID_ARGUMENT);
    expect(violationsOf(get)).to.deep.equal([['', 'MALFORMED']]);

    // Health too, which decodes with protobufjs (lenient about the length above, not about wire type 7).
    const health = await rawUnary(raw.query, '/grpc.health.v1.Health/Check', Buffer.from([0x0f]));
    expect(health.code).to.equal(status.INVALID_ARGUMENT);

    // A wire type (7) that does not exist, on a server stream.
    const watch = readStream(
      raw.query.makeServerStreamRequest(
        `/${QUERY}/WatchEvaluations`,
        identity,
        identity,
        Buffer.from([0x0f]),
        new Metadata(),
        soon(),
      ),
    );
    const watched = await watch.finished;
    expect(watched?.code).to.equal(status.INVALID_ARGUMENT);

    // A client stream whose second message does not decode: the header was valid and is forgotten.
    const { evalId } = await call(clients.command, clients.command.submitEvaluation, submission());
    const streamed = await new Promise<ServiceError>((resolve, reject) => {
      const stream = raw.command.makeClientStreamRequest(
        `/${COMMAND}/CompleteEvaluationStream`,
        identity,
        identity,
        new Metadata(),
        soon(),
        (err) => {
          if (err !== null) resolve(err);
          else reject(new Error('CompleteEvaluationStream answered OK to a chunk that is not protobuf'));
        },
      );
      const header = { evalId, exitCode: 0, outputSize: '3', requestId: '' };
      stream.write(Buffer.from(CompleteEvaluationStreamRequest.encode({ header }).finish()));
      stream.write(GARBAGE);
      stream.end();
    });
    expect(streamed.code).to.equal(status.INVALID_ARGUMENT);
    expect(streamed.details).to.match(/CompleteEvaluationStream.*message 2.*not a valid protobuf/);

    // Nothing was written, and both services go on serving.
    const done = await call(clients.command, clients.command.completeEvaluation, {
      evalId,
      output: Buffer.from('ok\n'),
      exitCode: 0,
      requestId: '',
    });
    expect(done.revision).to.equal('2');
    const got = await call(clients.query, clients.query.getEvaluation, { evalId, minPosition: done.position });
    expect(got.evaluation?.status).to.equal(EvaluationStatus.EVALUATION_STATUS_COMPLETED);
  });

  it('refuses a unary call whose frame is cut short, or that carries two messages, as INVALID_ARGUMENT', async () => {
    const request = Buffer.from([0x0a, 0x01, 0x61]); // a valid GetEvaluationRequest
    const frame = (message: Buffer, claimed = message.length): Buffer => {
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(claimed, 1);
      return Buffer.concat([prefix, message]);
    };
    const cases: [string, Buffer][] = [
      ['a frame announcing more bytes than it holds', frame(request, 10)],
      ['half a frame prefix', Buffer.from([0, 0, 0])],
      ['no message at all', Buffer.alloc(0)],
      ['two messages', Buffer.concat([frame(request), frame(request)])],
    ];
    for (const [what, body] of cases) {
      const answer = await http2Call(queryService.address, `/${QUERY}/GetEvaluation`, body);
      expect(answer.code, what).to.equal(status.INVALID_ARGUMENT);
    }
  });
});

/** One gRPC call written by hand over HTTP/2: `body` as the request's DATA, then its end. */
function http2Call(address: string, path: string, body: Buffer): Promise<{ code: number; message: string }> {
  const session = connect(`http://${address}`);
  return new Promise((resolve, reject) => {
    const request = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': '10S',
    });
    let answer: { code: number; message: string } | undefined;
    const take = (headers: Record<string, unknown>): void => {
      const code = headers['grpc-status'];
      if (code !== undefined) answer = { code: Number(code), message: decodeURI(String(headers['grpc-message'])) };
    };
    request.on('response', take);
    request.on('trailers', take);
    request.on('data', () => undefined);
    request.on('error', reject);
    request.on('close', () => {
      session.close();
      if (answer === undefined) reject(new Error(`${path} closed without a grpc-status`));
      else resolve(answer);
    });
    request.end(body);
  });
}
