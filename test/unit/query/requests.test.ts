import { expect } from 'chai';
import { ValidationError } from '../../../shared/errors';
import { EvaluationStatus } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { OutputKind } from '../../../shared/generated/crucible/storage/v1/query_service';
import { RequestChecks } from '../../../services/query/domain/requests';
import { isTerminalProto as isTerminalStatus } from '../../../shared/domain';

describe('query request checks', () => {
  it('collects every violation and throws them at once', () => {
    const checks = new RequestChecks();
    checks.evalId('');
    checks.position('-1', 'min_position');
    checks.pageSize(1001);
    checks.status(9 as EvaluationStatus, 'status');
    checks.outputKind(7 as OutputKind);
    try {
      checks.done();
      expect.fail('expected a ValidationError');
    } catch (err) {
      expect(err).to.be.instanceOf(ValidationError);
      expect((err as ValidationError).violations.map((v) => `${v.field}:${v.rule}`)).to.deep.equal([
        'eval_id:REQUIRED',
        'min_position:OUT_OF_RANGE',
        'page_size:OUT_OF_RANGE',
        'status:UNKNOWN_VALUE',
        'kind:UNKNOWN_VALUE',
      ]);
    }
  });

  it('refuses U+0000, which PostgreSQL cannot be asked about, in ids and other strings (fuzz seed 7 found it as INTERNAL)', () => {
    const checks = new RequestChecks();
    checks.evalId('e\u0000-1');
    checks.noNul('c\u0000', 'container_id');
    checks.noNul('fine', 'names[0]');
    expect(() => checks.done())
      .to.throw(ValidationError)
      .with.property('violations')
      .that.deep.equals([
        { field: 'eval_id', rule: 'INVALID_CHARACTER', description: 'eval_id must not contain the character U+0000' },
        {
          field: 'container_id',
          rule: 'INVALID_CHARACTER',
          description: 'container_id must not contain the character U+0000',
        },
      ]);
  });

  it('reads the valid values', () => {
    const checks = new RequestChecks();
    expect(checks.evalId('e-1')).to.equal('e-1');
    expect(checks.position(undefined, 'min_position')).to.equal(undefined);
    expect(checks.position('18446744073709551615', 'min_position')).to.equal(18446744073709551615n);
    expect(checks.pageSize(0)).to.equal(50);
    expect(checks.pageSize(1000)).to.equal(1000);
    expect(checks.status(EvaluationStatus.EVALUATION_STATUS_FAILED, 'status')).to.equal(
      EvaluationStatus.EVALUATION_STATUS_FAILED,
    );
    expect(checks.outputKind(OutputKind.OUTPUT_KIND_UNSPECIFIED)).to.equal('output');
    expect(checks.outputKind(OutputKind.OUTPUT_KIND_ERROR)).to.equal('error');
    checks.done();
  });

  it('knows the terminal statuses', () => {
    expect(isTerminalStatus(EvaluationStatus.EVALUATION_STATUS_COMPLETED)).to.equal(true);
    expect(isTerminalStatus(EvaluationStatus.EVALUATION_STATUS_CANCELLED)).to.equal(true);
    expect(isTerminalStatus(EvaluationStatus.EVALUATION_STATUS_RUNNING)).to.equal(false);
    expect(isTerminalStatus(undefined)).to.equal(false);
  });
});
