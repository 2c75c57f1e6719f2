import { expect } from 'chai';
import { legacyEvaluation, LegacyFormatError, legacyRequestId } from '../../../services/command/cli/legacy-format';

const file = (fields: Record<string, unknown>): string => JSON.stringify({ id: 'e1', code: 'print(1)', ...fields });

describe('the old platform file store, as the import reads it (legacy-format)', () => {
  it('turns each status into the commands an executor would have sent, with the same request ids every time', () => {
    const kinds = (status: string): string[] =>
      legacyEvaluation('e1.json', { evaluation: file({ status }) }).commands.map((c) => c.kind);
    expect(kinds('queued')).to.deep.equal(['submit']);
    expect(kinds('pending')).to.deep.equal(['submit']);
    expect(kinds('running')).to.deep.equal(['submit', 'start']);
    expect(kinds('completed')).to.deep.equal(['submit', 'start', 'complete']);
    expect(kinds('Timeout')).to.deep.equal(['submit', 'start', 'fail']);
    expect(kinds('cancelled')).to.deep.equal(['submit', 'cancel']);
    const once = legacyEvaluation('e1.json', { evaluation: file({ status: 'completed' }) });
    const twice = legacyEvaluation('e1.json', { evaluation: file({ status: 'completed' }) });
    expect(once.commands.map((c) => c.requestId)).to.deep.equal(twice.commands.map((c) => c.requestId));
    expect(legacyRequestId('e1', 'start')).to.not.equal(legacyRequestId('e2', 'start'));
    expect(legacyRequestId('x'.repeat(128), 'complete').length).to.be.at.most(128);
  });

  it('keeps what the lifecycle has no field for under metadata.legacy, beside the metadata file', () => {
    const { commands } = legacyEvaluation('e1.json', {
      evaluation: file({
        status: 'completed',
        error: 'w'.repeat(10_000),
        created_at: '2024-03-01T10:00:00Z',
        execution_time: 1.5,
        exit_code: 3,
        output: 'done',
      }),
      events: JSON.stringify([{ type: 'log', message: 'hi', timestamp: '2024-03-01T10:00:01Z' }]),
      metadata: JSON.stringify({ user: 'ada' }),
    });
    const submit = commands[0];
    if (submit?.kind !== 'submit') throw new Error('no submit first');
    const legacy = submit.metadata.legacy as Record<string, unknown>;
    expect(submit.metadata.user).to.equal('ada');
    expect(legacy).to.deep.include({
      status: 'completed',
      created_at: '2024-03-01T10:00:00.000Z',
      execution_time_seconds: 1.5,
      error_truncated: true,
    });
    expect(legacy.error).to.have.length(8 * 1024);
    expect(legacy.events).to.deep.equal([{ type: 'log', message: 'hi', timestamp: '2024-03-01T10:00:01.000Z' }]);
    const complete = commands[2];
    expect(complete?.kind === 'complete' && complete.exitCode).to.equal(3);
    expect(complete?.kind === 'complete' && complete.output.toString()).to.equal('done');
  });

  it('says what is wrong with a file it cannot take', () => {
    const problem = (texts: Parameters<typeof legacyEvaluation>[1], name = 'e1.json'): string => {
      try {
        legacyEvaluation(name, texts);
      } catch (err) {
        expect(err).to.be.instanceOf(LegacyFormatError);
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(problem({ evaluation: '[' })).to.match(/^the evaluation file is not JSON/);
    expect(problem({ evaluation: file({ status: 'queued' }) }, 'e2.json')).to.contain('does not match the file name');
    expect(problem({ evaluation: file({ status: 'queued', code: '' }) })).to.equal('"code" is missing');
    expect(problem({ evaluation: file({ status: 'lost' }) })).to.match(/^"status" "lost" is none of/);
    expect(problem({ evaluation: file({ status: 'queued', created_at: 'yesterday' }) })).to.contain('not a timestamp');
    expect(problem({ evaluation: file({ status: 'queued' }), events: '{}' })).to.equal(
      'its events file must hold a JSON list',
    );
  });
});
