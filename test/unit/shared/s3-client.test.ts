import { expect } from 'chai';
import { loadConfig } from '../../../shared/config';
import { createLogger } from '../../../shared/logging';
import { createS3Client } from '../../../shared/s3';

describe('S3 client', () => {
  it('writes the SDK’s warnings into the JSON log, failed commands at debug as their name and error, and drops the rest', () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger('debug', { service: 'unit' }, (line) =>
      lines.push(JSON.parse(line) as Record<string, unknown>),
    );
    const client = createS3Client(loadConfig({ ENVIRONMENT: 'test' }).s3, logger);
    const sdk = client.config.logger;
    sdk.info({ commandName: 'PutObjectCommand', input: { Body: Buffer.alloc(1024 * 1024) } });
    sdk.debug('signing');
    sdk.warn('An error was encountered in a non-retryable streaming request.');
    sdk.error({ commandName: 'PutObjectCommand', input: { Body: Buffer.alloc(16) }, error: new Error('aborted') });
    expect(lines.map(({ level, msg, detail }) => ({ level, msg, detail }))).to.deep.equal([
      { level: 'warn', msg: 's3 client', detail: 'An error was encountered in a non-retryable streaming request.' },
      { level: 'debug', msg: 's3 client: command failed', detail: 'PutObjectCommand: aborted' },
    ]);
    client.destroy();
  });
});
