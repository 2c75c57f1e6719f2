import { expect } from 'chai';
import { createHash } from 'node:crypto';
import {
  commandHash,
  UploadedOutput,
  type CompleteEvaluation,
  type SubmitEvaluation,
} from '../../../services/command/domain';

const SUBMIT: SubmitEvaluation = {
  type: 'SubmitEvaluation',
  evalId: 'e1',
  code: 'print(1)',
  language: 'python',
  engine: 'docker',
  timeoutSeconds: 30,
  metadata: { team: 'a', nested: { x: 1, y: [1, 2] } },
};

const COMPLETE: CompleteEvaluation = {
  type: 'CompleteEvaluation',
  evalId: 'e1',
  output: Buffer.from('out'),
  exitCode: 0,
};

describe('commandHash', () => {
  it('is a hex SHA-256', () => {
    expect(commandHash(SUBMIT)).to.match(/^[0-9a-f]{64}$/);
  });

  it('ignores how the command was delivered: request id and expected revision', () => {
    expect(commandHash({ ...SUBMIT, requestId: 'r1', expectedRevision: '0' })).to.equal(commandHash(SUBMIT));
    expect(commandHash({ ...COMPLETE, requestId: 'r2', expectedRevision: '7' })).to.equal(commandHash(COMPLETE));
  });

  it('changes with every part of the content', () => {
    const variants: SubmitEvaluation[] = [
      { ...SUBMIT, evalId: 'e2' },
      { ...SUBMIT, code: 'print(2)' },
      { ...SUBMIT, language: 'ruby' },
      { ...SUBMIT, engine: 'gvisor' },
      { ...SUBMIT, timeoutSeconds: 31 },
      { ...SUBMIT, metadata: { team: 'b', nested: { x: 1, y: [1, 2] } } },
      { ...SUBMIT, metadata: { team: 'a', nested: { x: 1, y: [2, 1] } } },
      { ...SUBMIT, metadata: { team: 'a', nested: { x: '1', y: [1, 2] } } },
    ];
    const hashes = new Set([commandHash(SUBMIT), ...variants.map((variant) => commandHash(variant))]);
    expect(hashes.size).to.equal(variants.length + 1);
  });

  it('tells commands of different types apart', () => {
    expect(commandHash({ type: 'CancelEvaluation', evalId: 'e1', reason: '' })).to.not.equal(
      commandHash({ type: 'StartEvaluation', evalId: 'e1', executorId: '', containerId: '' }),
    );
  });

  it('hashes output bytes by content, not identity', () => {
    expect(commandHash({ ...COMPLETE, output: Buffer.from('out') })).to.equal(commandHash(COMPLETE));
    expect(commandHash({ ...COMPLETE, output: Buffer.from('ouT') })).to.not.equal(commandHash(COMPLETE));
    expect(commandHash({ ...COMPLETE, output: Buffer.from([0xff, 0xfe]) })).to.not.equal(
      commandHash({ ...COMPLETE, output: Buffer.from([0xfe, 0xff]) }),
    );
    expect(commandHash({ ...COMPLETE, exitCode: 1 })).to.not.equal(commandHash(COMPLETE));
  });

  it('counts a streamed (uploaded) output by its digest: the same bytes are the same command either way', () => {
    const digest = createHash('sha256').update('out').digest('hex');
    const streamed = (hex: string): CompleteEvaluation => ({
      ...COMPLETE,
      output: new UploadedOutput('evaluations/e1/output/streamed-1', 3, hex, Buffer.from('out')),
    });
    expect(commandHash(streamed(digest))).to.equal(commandHash(COMPLETE));
    expect(commandHash(streamed(digest.replace(/^./, '0')))).to.not.equal(commandHash(COMPLETE));
    // Metadata shaped like an upload is still data: only the class counts as one.
    const lookalike = { key: 'k', size: 3, digest, head: 'out' };
    expect(commandHash({ ...SUBMIT, metadata: { a: lookalike } })).to.not.equal(
      commandHash({ ...SUBMIT, metadata: { a: { ...lookalike, key: 'other' } } }),
    );
  });

  it('does not depend on key order, at any depth', () => {
    const reordered: SubmitEvaluation = {
      metadata: { nested: { y: [1, 2], x: 1 }, team: 'a' },
      timeoutSeconds: 30,
      engine: 'docker',
      language: 'python',
      code: 'print(1)',
      evalId: 'e1',
      type: 'SubmitEvaluation',
    };
    expect(commandHash(reordered)).to.equal(commandHash(SUBMIT));
  });

  it('tells a submit with an eval_id from one without', () => {
    const { evalId: _omitted, ...anonymous } = SUBMIT;
    expect(commandHash(anonymous)).to.not.equal(commandHash(SUBMIT));
  });
});
