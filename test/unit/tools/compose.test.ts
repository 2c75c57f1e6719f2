import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { composeProblems, dockerfileEnv } from '../../../tools/check-compose';

const ROOT = join(__dirname, '..', '..', '..', '..');
const COMPOSE = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
const IMAGE_ENV = dockerfileEnv(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));

describe('tools/check-compose: docker-compose.yml holds together', () => {
  it('finds nothing wrong with the repository compose file', () => {
    expect(composeProblems(COMPOSE, IMAGE_ENV)).to.deep.equal([]);
    expect(IMAGE_ENV).to.include({ ENVIRONMENT: 'production' });
  });

  it("starts from the image's environment: a compose file that leaves ENVIRONMENT to the image must configure production", () => {
    const problems = composeProblems(COMPOSE.replace('  ENVIRONMENT: development\n', ''), IMAGE_ENV);
    expect(
      problems.some((p) => p.startsWith('services.command.environment is refused') && p.includes('AUTH_MODE')),
    ).to.equal(true);
  });

  it('names what breaks it: a missing dependency, a typo in a setting, a refused value, an unpublished port', () => {
    const broken = COMPOSE.replace('  S3_BUCKET: crucible-outputs', '  S3_BUCKT: crucible-outputs')
      .replace('  LOG_LEVEL: info', '  LOG_LEVEL: loud')
      .replace(
        '      create-bucket:\n        condition: service_completed_successfully',
        '      create-buckets:\n        condition: service_completed_successfully',
      );
    const problems = composeProblems(broken);
    expect(problems).to.include('services.command.depends_on names create-buckets, which is no service');
    expect(problems).to.include('services.command.environment sets S3_BUCKT, which is no setting (a typo?)');
    expect(
      problems.some(
        (p) => p.startsWith('services.query.environment is refused by the service') && p.includes('LOG_LEVEL'),
      ),
    ).to.equal(true);
    const unpublished = composeProblems(COMPOSE.replace("      - '127.0.0.1:9465:9465'", "      - '9466:9466/tcp'"));
    expect(unpublished).to.deep.equal([
      'services.query listens on 9465 (its environment says), which its ports do not publish',
    ]);
  });

  it('says so when the file does not parse or has no services', () => {
    expect(composeProblems('services: [')[0]).to.match(/^does not parse/);
    expect(composeProblems('volumes: {}')).to.deep.equal(['has no `services` map']);
  });
});
