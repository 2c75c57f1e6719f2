import { expect } from 'chai';
import {
  isPostgresUnavailable,
  leavesOutcomeUnknown,
  postgresUnavailableCause,
  uniqueViolation,
} from '../../../shared/postgres';

function pgError(message: string, fields: Record<string, unknown>): Error {
  return Object.assign(new Error(message), fields);
}

describe('PostgreSQL error classification', () => {
  it('treats refused, reset and timed-out connections as unavailable', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN']) {
      expect(isPostgresUnavailable(pgError(`connect ${code}`, { code })), code).to.equal(true);
    }
  });

  it('treats connection-exception, resource and shutdown SQLSTATEs as unavailable', () => {
    for (const code of ['08006', '08001', '53300', '57P01', '57P02', '57P03']) {
      expect(isPostgresUnavailable(pgError('server says no', { code })), code).to.equal(true);
    }
  });

  it('recognises the pool’s own connection failures by message', () => {
    for (const message of ['Connection terminated unexpectedly', 'timeout exceeded when trying to connect']) {
      expect(isPostgresUnavailable(new Error(message)), message).to.equal(true);
    }
  });

  it('treats a read-only session, a lock timeout and a statement timeout as unavailable, naming the cause', () => {
    const causes = {
      '25006': /session is read-only \(a standby, or default_transaction_read_only is on\)/,
      '55P03': /lock wait outlasted lock_timeout/,
      '57014': /outlasted statement_timeout/,
      '57P01': /ended or refused the session/,
    };
    for (const [code, cause] of Object.entries(causes)) {
      const err = pgError('server says no', { code, severity: 'ERROR' });
      expect(isPostgresUnavailable(err), code).to.equal(true);
      expect(postgresUnavailableCause(err), code).to.match(cause);
    }
    expect(postgresUnavailableCause(pgError('connect ECONNREFUSED 127.0.0.1:5432', { code: 'ECONNREFUSED' }))).to.match(
      /cannot be reached/,
    );
  });

  it('treats a deadlock PostgreSQL broke (40P01) as unavailable: the write was rolled back, and a retry succeeds', () => {
    expect(postgresUnavailableCause(pgError('deadlock detected', { code: '40P01' }))).to.match(/deadlock/);
  });

  it('does not treat bugs and constraint violations as unavailable', () => {
    for (const code of ['23505', '42P01', '42601', '22P02', '40001', '25P02']) {
      expect(isPostgresUnavailable(pgError('error', { code })), code).to.equal(false);
    }
    expect(isPostgresUnavailable(new TypeError('x is undefined'))).to.equal(false);
    expect(isPostgresUnavailable('ECONNREFUSED')).to.equal(false);
  });

  it('names the constraint of a unique violation, and nothing else', () => {
    expect(uniqueViolation(pgError('dup', { code: '23505', constraint: 'evaluations_pkey' }))).to.equal(
      'evaluations_pkey',
    );
    expect(uniqueViolation(pgError('dup', { code: '23505' }))).to.equal('');
    expect(uniqueViolation(pgError('fk', { code: '23503', constraint: 'x' }))).to.equal(undefined);
    expect(uniqueViolation('23505')).to.equal(undefined);
  });

  describe('whether a failed write may have committed', () => {
    it('is unknown when the connection failed or the session ended (FATAL, PANIC), whatever the SQLSTATE', () => {
      for (const err of [
        pgError('terminating connection due to administrator command', { code: '57P01', severity: 'FATAL' }),
        pgError('server closed the connection', { code: 'XX000', severity: 'PANIC' }),
        pgError('read ECONNRESET', { code: 'ECONNRESET' }),
        pgError('write EPIPE', { code: 'EPIPE' }),
        new Error('Connection terminated unexpectedly'),
        new Error('Client has encountered a connection error and is not queryable'),
        pgError('connection failure', { code: '08006' }),
      ]) {
        expect(leavesOutcomeUnknown(err), err.message).to.equal(true);
      }
    });

    it('is known (rolled back) when PostgreSQL answered the statement with an ERROR', () => {
      for (const code of ['25006', '55P03', '57014', '23505', '40001', '25P02', '53100']) {
        expect(leavesOutcomeUnknown(pgError('error', { code, severity: 'ERROR' })), code).to.equal(false);
      }
    });

    it('is not claimed for errors that are not PostgreSQL’s or the connection’s', () => {
      expect(leavesOutcomeUnknown(new TypeError('x is undefined'))).to.equal(false);
      expect(leavesOutcomeUnknown('ECONNRESET')).to.equal(false);
    });
  });
});
