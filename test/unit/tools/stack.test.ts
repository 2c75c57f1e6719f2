import { expect } from 'chai';
import { createResourceStack } from '../../../tools/stack/processes';
import { createProgress, StackError } from '../../../tools/stack/progress';
import { failureList, parseSuites } from '../../../tools/stack/suites';
import { cannotStart, isConnectionRefused } from '../../../tools/stack/system';

const quiet = createProgress(() => undefined);

describe('stack tool', () => {
  describe('resource stack', () => {
    it('stops resources newest first, and keeps going when one fails to stop', async () => {
      const stopped: string[] = [];
      const resources = createResourceStack();
      for (const name of ['postgres', 'redis', 's3rver', 'service']) {
        resources.add({
          name,
          stop: () => {
            stopped.push(name);
            return name === 's3rver' ? Promise.reject(new Error('boom')) : Promise.resolve();
          },
        });
      }
      await resources.stopAll(quiet);
      expect(stopped).to.deep.equal(['service', 's3rver', 'redis', 'postgres']);
      expect(resources.names).to.deep.equal([]);
    });
  });

  describe('suites', () => {
    it('runs every suite in order by default, and only the named ones otherwise', () => {
      expect(parseSuites([])).to.deep.equal(['unit', 'integration', 'e2e', 'fault', 'cluster', 'fuzz', 'soak']);
      expect(parseSuites(['soak', 'fault'])).to.deep.equal(['fault', 'soak']);
      expect(parseSuites(['e2e', 'unit'])).to.deep.equal(['unit', 'e2e']);
    });

    it('rejects an unknown suite, naming the known ones', () => {
      expect(() => parseSuites(['smoke'])).to.throw(StackError, 'smoke');
    });

    it("keeps mocha's failure list, the last one printed, to repeat at the end of the run", () => {
      const output = [
        '  retention',
        '    1) archives an evaluation',
        '  12 passing (3s)',
        '  1 failing',
        '',
        '  1) retention',
        '       archives an evaluation:',
        '     AssertionError: expected 1 to equal 2',
        '',
      ].join('\n');
      expect(failureList(output)).to.equal(
        '1 failing\n\n  1) retention\n       archives an evaluation:\n     AssertionError: expected 1 to equal 2',
      );
      expect(failureList('  3 passing (1s)\n')).to.equal('');
      expect(failureList(`  1 failing\n${'x'.repeat(100_000)}`)).to.have.length.below(30_000);
    });
  });

  describe('what to do about a server that does not answer', () => {
    const local = { what: 'Redis', variable: 'REDIS_URL', host: '127.0.0.1', port: '56379' };

    it('starts one when nothing listens on a local port', () => {
      expect(cannotStart(local, { kind: 'nothing-listens' })).to.equal(undefined);
    });

    it('never starts one for a remote address', () => {
      const error = cannotStart({ ...local, host: 'redis.internal' }, { kind: 'nothing-listens' });
      expect(error?.message).to.contain('not on this machine');
      expect(error?.advice).to.contain('REDIS_URL');
    });

    it('does not start one on a port something else holds', () => {
      const error = cannotStart(local, { kind: 'unreachable', error: new Error('Command timed out') });
      expect(error?.message).to.contain('does not answer as Redis');
    });

    it('does not start one when the server answers with an error', () => {
      const error = cannotStart(local, { kind: 'refuses', error: new Error('WRONGPASS') });
      expect(error?.message).to.contain('WRONGPASS');
    });

    it('recognises a refused connection, also among happy-eyeballs attempts', () => {
      const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      expect(isConnectionRefused(refused)).to.equal(true);
      expect(isConnectionRefused(new AggregateError([refused]))).to.equal(true);
      expect(isConnectionRefused(new Error('timeout expired'))).to.equal(false);
    });
  });
});
