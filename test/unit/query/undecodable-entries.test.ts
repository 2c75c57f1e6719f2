import { expect } from 'chai';
import { createLogger, type LogFields } from '../../../shared/logging';
import { createUndecodableEntries } from '../../../services/query/redis/undecodable-entries';

describe('undecodable read-model entries: counted, and logged at a bounded rate', () => {
  it('logs the first skip with where it is, then one line per interval saying how many went unlogged', () => {
    const lines: LogFields[] = [];
    let now = 0;
    const entries = createUndecodableEntries(
      createLogger('info', {}, (line) => void lines.push(JSON.parse(line) as LogFields)),
      { intervalMs: 10_000, clock: () => now },
    );
    entries.report({ key: 'p:{p:0}:changes', position: 7n, reason: 'garbage' });
    for (let i = 0; i < 500; i += 1) entries.report({ key: 'p:{p:0}:changes', position: 7n, reason: 'garbage' });
    now = 9_999;
    entries.report({ key: 'p:{p:0}:history:e-1', revision: 2n, reason: 'too deep' });
    expect(lines).to.have.length(1);
    now = 10_000;
    entries.report({ key: 'p:{p:0}:eval:e-2', reason: 'too deep' });
    expect(entries.skipped).to.equal(503);
    expect(
      lines.map(({ msg, key, position, revision, skipped, unlogged }) => ({
        msg,
        key,
        position,
        revision,
        skipped,
        unlogged,
      })),
    ).to.deep.equal([
      {
        msg: 'skipped an undecodable read-model entry',
        key: 'p:{p:0}:changes',
        position: '7',
        revision: undefined,
        skipped: 1,
        unlogged: 0,
      },
      {
        msg: 'skipped an undecodable read-model entry',
        key: 'p:{p:0}:eval:e-2',
        position: undefined,
        revision: undefined,
        skipped: 503,
        unlogged: 501,
      },
    ]);
    expect(lines[0]).to.include({ level: 'warn', reason: 'garbage' });
  });
});
