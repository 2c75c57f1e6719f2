import { createHash, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import {
  commandHash,
  contentDigest,
  memoizeDigest,
  planBody,
  utf8Prefix,
  type BodyLimits,
  type BodyPlan,
  type CompleteEvaluation,
} from '../../../services/command/domain';

const LIMITS: BodyLimits = { previewBytes: 1024, inlineOutputMaxBytes: 1024 * 1024, inlineCodeMaxBytes: 100 * 1024 };

function preview(plan: BodyPlan): Buffer {
  return Buffer.from(plan.ref.previewBase64, 'base64');
}

describe('bodies', () => {
  describe('utf8Prefix', () => {
    it('returns text shorter than the limit whole', () => {
      const text = Buffer.from('héllo', 'utf8');
      expect(utf8Prefix(text, 6).equals(text)).to.equal(true);
      expect(utf8Prefix(text, 100).equals(text)).to.equal(true);
    });

    it('cuts at the limit when it falls between characters', () => {
      expect(utf8Prefix(Buffer.from('abcdef'), 3).toString()).to.equal('abc');
      expect(utf8Prefix(Buffer.from('a€b'), 4).toString()).to.equal('a€');
    });

    it('never splits a 2-, 3- or 4-byte character', () => {
      // é = 2 bytes, € = 3 bytes, 😀 = 4 bytes; cutting inside each steps back to its start.
      expect(utf8Prefix(Buffer.from('aé'), 2).toString()).to.equal('a');
      expect(utf8Prefix(Buffer.from('a€'), 2).toString()).to.equal('a');
      expect(utf8Prefix(Buffer.from('a€'), 3).toString()).to.equal('a');
      for (const max of [2, 3, 4]) expect(utf8Prefix(Buffer.from('a😀'), max).toString(), String(max)).to.equal('a');
      expect(utf8Prefix(Buffer.from('a😀'), 5).toString()).to.equal('a😀');
    });

    it('gives valid UTF-8 for every cut of a mixed text', () => {
      const text = Buffer.from('aé€😀b'.repeat(3), 'utf8');
      for (let max = 0; max <= text.length; max += 1) {
        const cut = utf8Prefix(text, max);
        expect(cut.length, `max ${max}`).to.be.at.most(max);
        expect(max - cut.length, `max ${max} loses at most one partial character`).to.be.below(4);
        // Round-tripping through a string would change bytes if the cut split a character.
        expect(Buffer.from(cut.toString('utf8'), 'utf8').equals(cut), `max ${max}`).to.equal(true);
      }
    });
  });

  describe('planBody', () => {
    it('keeps nothing for an empty body', () => {
      const plan = planBody('e1', 'output', Buffer.alloc(0), LIMITS);
      expect(plan).to.deep.equal({ ref: { previewBase64: '', size: 0, location: '' }, storage: 'none' });
    });

    it('keeps a body up to the inline limit in PostgreSQL, with its first bytes as preview', () => {
      const content = randomBytes(LIMITS.inlineOutputMaxBytes);
      const plan = planBody('e1', 'output', content, LIMITS);
      expect(plan.storage).to.equal('postgres');
      expect(plan.ref.location).to.equal('postgres');
      expect(plan.ref.size).to.equal(content.length);
      expect(plan.ref.s3Key).to.equal(undefined);
      expect(plan.storage === 'postgres' && plan.content.equals(content)).to.equal(true);
      expect(preview(plan).equals(content.subarray(0, 1024))).to.equal(true);
    });

    it('sends a body one byte above the inline limit to S3 under a content-derived key', () => {
      const content = randomBytes(LIMITS.inlineOutputMaxBytes + 1);
      const plan = planBody('e1', 'output', content, LIMITS);
      const digest = createHash('sha256').update(content).digest('hex');
      expect(plan.storage).to.equal('s3');
      expect(plan.ref).to.deep.include({
        location: 's3',
        size: content.length,
        s3Key: `evaluations/e1/output/${digest}`,
      });
      expect(plan.storage === 's3' && plan.key).to.equal(plan.ref.s3Key);
      expect(plan.storage === 's3' && plan.content.equals(content)).to.equal(true);
      expect(preview(plan).equals(content.subarray(0, 1024))).to.equal(true);
    });

    it('follows configured thresholds', () => {
      const limits = { previewBytes: 4, inlineOutputMaxBytes: 10, inlineCodeMaxBytes: 10 };
      expect(planBody('e1', 'output', Buffer.alloc(10, 1), limits).storage).to.equal('postgres');
      const big = planBody('e1', 'output', Buffer.from('0123456789A'), limits);
      expect(big.storage).to.equal('s3');
      expect(preview(big).toString()).to.equal('0123');
      const none = { previewBytes: 0, inlineOutputMaxBytes: 0, inlineCodeMaxBytes: 0 };
      expect(planBody('e1', 'output', Buffer.from('x'), none).storage).to.equal('s3');
    });

    it('keeps code by its own threshold, under a key named by its SHA-256 (the code_hash)', () => {
      const limits = { previewBytes: 4, inlineOutputMaxBytes: 100, inlineCodeMaxBytes: 5 };
      expect(planBody('e1', 'code', Buffer.from('print'), limits).storage).to.equal('postgres');
      expect(planBody('e1', 'output', Buffer.from('print(1)'), limits).storage).to.equal('postgres');
      const code = Buffer.from('print(1)');
      const plan = planBody('e1', 'code', code, limits);
      expect(plan.storage).to.equal('s3');
      expect(plan.ref.s3Key).to.equal(`evaluations/e1/code/${createHash('sha256').update(code).digest('hex')}`);
    });

    it('derives the same key from the same content, and different keys per evaluation, kind and content', () => {
      const limits = { previewBytes: 4, inlineOutputMaxBytes: 2, inlineCodeMaxBytes: 2 };
      const key = (evalId: string, kind: 'output' | 'error', content: string): string | undefined =>
        planBody(evalId, kind, Buffer.from(content), limits).ref.s3Key;
      expect(key('e1', 'output', 'abc')).to.equal(key('e1', 'output', 'abc'));
      const keys = new Set([
        key('e1', 'output', 'abc'),
        key('e2', 'output', 'abc'),
        key('e1', 'error', 'abc'),
        key('e1', 'output', 'abd'),
      ]);
      expect(keys.size).to.equal(4);
    });

    it('cuts an output preview at exactly the preview size, bytes being bytes', () => {
      const content = Buffer.from('a' + '€'.repeat(10)); // the 4-byte cut splits the second €
      expect(
        preview(planBody('e1', 'output', content, { ...LIMITS, previewBytes: 4, inlineOutputMaxBytes: 100 })).length,
      ).to.equal(4);
    });

    it('cuts an error preview back to a UTF-8 character boundary', () => {
      const content = Buffer.from('a' + '€'.repeat(10));
      const plan = planBody('e1', 'error', content, { ...LIMITS, previewBytes: 4, inlineOutputMaxBytes: 100 });
      expect(preview(plan).toString('utf8')).to.equal('a€');
      expect(plan.ref.size).to.equal(content.length);
    });
  });

  describe('one digest per body', () => {
    it('hashes each Buffer once when memoized', () => {
      const memo = memoizeDigest();
      const content = Buffer.from('abc');
      const first = memo(content);
      expect(first).to.equal(createHash('sha256').update('abc').digest('hex'));
      content[0] = 0x78; // a Buffer is not changed in a command; this shows the memo did not hash again
      expect(memo(content)).to.equal(first);
      expect(memo(Buffer.from(content))).to.equal(contentDigest(Buffer.from('xbc')));
    });

    it('gives the command hash and the plan the results they compute alone', () => {
      const output = randomBytes(LIMITS.inlineOutputMaxBytes + 1);
      const command: CompleteEvaluation = { type: 'CompleteEvaluation', evalId: 'e1', output, exitCode: 0 };
      const memo = memoizeDigest();
      expect(commandHash(command, memo)).to.equal(commandHash(command));
      const plan = planBody('e1', 'output', output, LIMITS, memo);
      expect(plan).to.deep.equal(planBody('e1', 'output', output, LIMITS));
      expect(plan.storage === 's3' && plan.digest).to.equal(contentDigest(output));
    });
  });
});
