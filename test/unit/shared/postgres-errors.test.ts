import { expect } from 'chai';
import { isPostgresUnavailable, uniqueViolation } from '../../../shared/postgres';

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

  it('does not treat bugs and constraint violations as unavailable', () => {
    for (const code of ['23505', '42P01', '42601', '22P02', '40001', '57014']) {
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
});
