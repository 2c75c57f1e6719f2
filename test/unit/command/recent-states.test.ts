import { expect } from 'chai';
import { createRecentStates } from '../../../services/command/application/recent-states';
import type { EvaluationSnapshot } from '../../../services/command/domain';

function state(evalId: string, revision = '1', extra: Partial<EvaluationSnapshot> = {}): EvaluationSnapshot {
  const logged = { evalId, revision, position: revision, commandHash: `h${revision}` };
  return {
    evalId,
    status: 'queued',
    revision,
    submitted: logged,
    latest: logged,
    createdAt: new Date(0),
    metricNames: [],
    logBytes: { stdout: 0, stderr: 0 },
    ...extra,
  };
}

describe('recent states', () => {
  it('keeps the latest state of each evaluation, per tenant', () => {
    const recent = createRecentStates(10);
    recent.remember('acme', 'e1', state('e1', '1'));
    recent.remember('acme', 'e1', state('e1', '2'));
    recent.remember('globex', 'e1', state('e1', '7'));
    expect(recent.get('acme', 'e1')?.revision).to.equal('2');
    expect(recent.get('globex', 'e1')?.revision).to.equal('7');
    expect(recent.get('other', 'e1')).to.equal(undefined);
  });

  it('drops the least recently used past its capacity: a read counts as a use', () => {
    const recent = createRecentStates(2);
    recent.remember('t', 'a', state('a'));
    recent.remember('t', 'b', state('b'));
    recent.get('t', 'a');
    recent.remember('t', 'c', state('c'));
    expect(recent.get('t', 'b'), 'least recently used').to.equal(undefined);
    expect(recent.get('t', 'a')?.evalId).to.equal('a');
    expect(recent.get('t', 'c')?.evalId).to.equal('c');
  });

  it('counts the states it found, those it did not, and those that needed a load after all (which it forgets)', () => {
    const recent = createRecentStates(5);
    recent.remember('t', 'a', state('a'));
    recent.get('t', 'a');
    recent.get('t', 'b');
    recent.reloaded('t', 'a');
    expect(recent.get('t', 'a')).to.equal(undefined);
    expect(recent.counts).to.deep.equal({ hits: 1, misses: 2, reloaded: 1 });
  });

  it('forgets what is remembered as undefined, keeps nothing archived, and nothing at all at capacity 0', () => {
    const recent = createRecentStates(5);
    recent.remember('t', 'a', state('a', '3'));
    recent.remember('t', 'a', undefined);
    expect(recent.get('t', 'a')).to.equal(undefined);
    recent.remember('t', 'b', state('b', '4'));
    recent.remember('t', 'b', state('b', '4', { archivedAt: new Date(0) }));
    expect(recent.get('t', 'b'), 'archived: the older state is dropped too').to.equal(undefined);
    const none = createRecentStates(0);
    none.remember('t', 'a', state('a'));
    expect(none.get('t', 'a')).to.equal(undefined);
  });
});
