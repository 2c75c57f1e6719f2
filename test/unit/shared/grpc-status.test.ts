import { status as GrpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  AlreadyExistsError,
  IllegalTransitionError,
  NotFoundError,
  ResourceExhaustedError,
  RevisionConflictError,
  UnavailableError,
  ValidationError,
} from '../../../shared/errors';
import {
  BadRequest,
  ErrorInfo,
  PreconditionFailure,
  RetryInfo,
} from '../../../shared/generated/google/rpc/error_details';
import { Status as RpcStatus } from '../../../shared/generated/google/rpc/status';
import { createCallLog, toStatus, type StatusObject } from '../../../shared/grpc';
import { createLogger, type Logger } from '../../../shared/logging';

interface Captured {
  readonly logger: Logger;
  readonly lines: Record<string, unknown>[];
}

function capturingLogger(): Captured {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('debug', {}, (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  return { logger, lines };
}

/** Decodes grpc-status-details-bin as a client would. */
function detailsOf(status: StatusObject): RpcStatus | undefined {
  const values = status.metadata.get('grpc-status-details-bin');
  if (values.length === 0) return undefined;
  expect(values).to.have.length(1);
  const [value] = values;
  expect(Buffer.isBuffer(value), 'binary metadata').to.equal(true);
  return RpcStatus.decode(value as Buffer);
}

function detailOf(status: RpcStatus | undefined, typeName: string): Buffer {
  const found = status?.details.find((d) => d.typeUrl === `type.googleapis.com/${typeName}`);
  if (found === undefined) return expect.fail(`no ${typeName} detail`);
  return found.value;
}

describe('toStatus', () => {
  it('maps ValidationError to INVALID_ARGUMENT with a decodable google.rpc.BadRequest', () => {
    const err = new ValidationError([
      { field: 'code', rule: 'REQUIRED', description: 'code is required' },
      { field: 'timeout_seconds', rule: 'OUT_OF_RANGE', description: 'timeout_seconds must be from 1 to 3600, got 0' },
    ]);
    const status = toStatus(err, createCallLog(capturingLogger().logger), 'SubmitEvaluation');
    expect(status.code).to.equal(GrpcStatus.INVALID_ARGUMENT);
    expect(status.details).to.include('code is required').and.include('timeout_seconds');
    const rpc = detailsOf(status);
    expect(rpc?.code).to.equal(GrpcStatus.INVALID_ARGUMENT);
    expect(rpc?.message).to.equal(status.details);
    const badRequest = BadRequest.decode(detailOf(rpc, 'google.rpc.BadRequest'));
    expect(badRequest.fieldViolations).to.deep.equal([
      { field: 'code', reason: 'REQUIRED', description: 'code is required' },
      {
        field: 'timeout_seconds',
        reason: 'OUT_OF_RANGE',
        description: 'timeout_seconds must be from 1 to 3600, got 0',
      },
    ]);
  });

  it('keeps the status of a request that breaks thousands of rules small enough for a client to read', () => {
    const violations = Array.from({ length: 35_000 }, (_, i) => ({
      field: `violation_types[${i}]`,
      rule: 'UNKNOWN_VALUE',
      description: `violation_types[${i}] is not a violation type: 120 ${'!'.repeat(500)}`,
    }));
    const status = toStatus(
      new ValidationError(violations),
      createCallLog(capturingLogger().logger),
      'ListSecurityEvents',
    );
    expect(status.details.length).to.be.at.most(1024);
    expect(status.details).to.match(/^violation_types\[0\]: violation_types\[0\] is not a violation type/);
    const encoded = status.metadata.get('grpc-status-details-bin')[0] as Buffer;
    // Binary trailers go out base64 encoded: 4/3 of this, within grpc-js's 8 KiB of metadata.
    expect(encoded.length).to.be.below(6 * 1024);
    const badRequest = BadRequest.decode(detailOf(detailsOf(status), 'google.rpc.BadRequest'));
    expect(badRequest.fieldViolations).to.have.length(21);
    expect(badRequest.fieldViolations[0]?.field).to.equal('violation_types[0]');
    expect(badRequest.fieldViolations[0]?.description.length).to.be.at.most(200);
    expect(badRequest.fieldViolations[20]).to.deep.equal({
      field: '',
      reason: 'MORE_VIOLATIONS',
      description: 'and 34980 more violations of the same request',
    });
  });

  it('maps RetryInfo onto RESOURCE_EXHAUSTED when the refusal says when to retry', () => {
    const status = toStatus(
      new ResourceExhaustedError('over the rate', 1500),
      createCallLog(capturingLogger().logger),
      'X',
    );
    expect(status.code).to.equal(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(RetryInfo.decode(detailOf(detailsOf(status), 'google.rpc.RetryInfo')).retryDelay).to.deep.equal({
      seconds: '1',
      nanos: 500_000_000,
    });
  });

  it('maps RetryInfo onto UNAVAILABLE when an overloaded service says when to retry, and none when it cannot', () => {
    const log = createCallLog(capturingLogger().logger);
    const status = toStatus(new UnavailableError('overloaded', { retryAfterMs: 250 }), log, 'X');
    expect(status.code).to.equal(GrpcStatus.UNAVAILABLE);
    expect(RetryInfo.decode(detailOf(detailsOf(status), 'google.rpc.RetryInfo')).retryDelay).to.deep.equal({
      seconds: '0',
      nanos: 250_000_000,
    });
    expect(detailsOf(toStatus(new UnavailableError('PostgreSQL is down'), log, 'X'))).to.equal(undefined);
  });

  it('maps RevisionConflictError to ABORTED, naming the current revision in message and ErrorInfo', () => {
    const status = toStatus(
      new RevisionConflictError('e1', '2', '5'),
      createCallLog(capturingLogger().logger),
      'CancelEvaluation',
    );
    expect(status.code).to.equal(GrpcStatus.ABORTED);
    expect(status.details).to.include('revision 5');
    const info = ErrorInfo.decode(detailOf(detailsOf(status), 'google.rpc.ErrorInfo'));
    expect(info.reason).to.equal('REVISION_CONFLICT');
    expect(info.metadata).to.deep.equal({ expected_revision: '2', current_revision: '5' });
  });

  it('maps IllegalTransitionError to FAILED_PRECONDITION with a PreconditionFailure', () => {
    const status = toStatus(
      new IllegalTransitionError('e1', 'completed', 'running'),
      createCallLog(capturingLogger().logger),
      'StartEvaluation',
    );
    expect(status.code).to.equal(GrpcStatus.FAILED_PRECONDITION);
    expect(status.details).to.include('completed').and.include('running');
    const rpc = detailsOf(status);
    const failure = PreconditionFailure.decode(detailOf(rpc, 'google.rpc.PreconditionFailure'));
    expect(failure.violations).to.have.length(1);
    expect(failure.violations[0]).to.deep.include({ type: 'STATUS', subject: 'evaluations/e1' });
    const info = ErrorInfo.decode(detailOf(rpc, 'google.rpc.ErrorInfo'));
    expect(info).to.deep.include({ reason: 'ILLEGAL_TRANSITION', metadata: { from: 'completed', to: 'running' } });
  });

  it('maps NotFoundError, AlreadyExistsError and UnavailableError, keeping their messages', () => {
    const { logger } = capturingLogger();
    const cases: [Error, GrpcStatus][] = [
      [new NotFoundError('evaluation e1 not found'), GrpcStatus.NOT_FOUND],
      [new AlreadyExistsError('evaluation e1 already exists with different content'), GrpcStatus.ALREADY_EXISTS],
      [new UnavailableError('PostgreSQL is unavailable (load); retry'), GrpcStatus.UNAVAILABLE],
    ];
    for (const [err, code] of cases) {
      const status = toStatus(err, createCallLog(logger), 'M');
      expect(status.code, err.constructor.name).to.equal(code);
      expect(status.details).to.equal(err.message);
    }
  });

  it('keeps the cause of an UnavailableError in the server log only', () => {
    const { logger, lines } = capturingLogger();
    const cause = new Error('connect ECONNREFUSED 10.1.2.3:5432');
    const status = toStatus(
      new UnavailableError('PostgreSQL is unavailable; retry', { cause }),
      createCallLog(logger),
      'M',
    );
    expect(status.details).to.not.include('10.1.2.3');
    expect(JSON.stringify(lines)).to.include('10.1.2.3');
  });

  it('counts refusals and logs one line per method and reason per interval, without a stack, saying how many it did not log', () => {
    const { logger, lines } = capturingLogger();
    let now = 0;
    const log = createCallLog(logger, { intervalMs: 10_000, clock: () => now });
    const overloaded = new UnavailableError('command service overloaded; retry with backoff');
    for (let i = 0; i < 500; i += 1) toStatus(overloaded, log, 'SubmitEvaluation');
    toStatus(overloaded, log, 'StartEvaluation');
    now = 10_000;
    toStatus(overloaded, log, 'SubmitEvaluation');
    expect(log.refusals.get('SubmitEvaluation')).to.equal(501);
    const refusals = lines.filter((l) => l.msg === 'refused: dependency unavailable');
    expect(refusals.map((l) => [l.method, l.refusedSinceLastLine])).to.deep.equal([
      ['SubmitEvaluation', 0],
      ['StartEvaluation', 0],
      ['SubmitEvaluation', 499],
    ]);
    expect(JSON.stringify(refusals)).to.not.include('    at ');
  });

  it('maps an unknown error to INTERNAL with a generic message, logging the original with its stack', () => {
    const { logger, lines } = capturingLogger();
    const err = new TypeError('relation "evaluations" password=hunter2 at /srv/app.js');
    const status = toStatus(err, createCallLog(logger), 'SubmitEvaluation');
    expect(status.code).to.equal(GrpcStatus.INTERNAL);
    expect(status.details).to.not.include('hunter2').and.not.include('evaluations').and.not.include('TypeError');
    expect(status.metadata.get('grpc-status-details-bin')).to.have.length(0);
    const logged = lines.find((l) => l.level === 'error');
    expect(logged, 'an error log line').to.not.equal(undefined);
    expect(logged?.method).to.equal('SubmitEvaluation');
    expect(JSON.stringify(logged)).to.include('hunter2').and.include('at ');
  });

  it('maps thrown non-errors to INTERNAL too', () => {
    for (const thrown of ['a string', 42, undefined, { code: 5 }]) {
      expect(toStatus(thrown, createCallLog(capturingLogger().logger), 'M').code).to.equal(GrpcStatus.INTERNAL);
    }
  });
});
