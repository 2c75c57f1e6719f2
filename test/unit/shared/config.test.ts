import { expect } from 'chai';
import {
  ConfigError,
  defaultPostgresSession,
  loadConfig,
  SETTINGS,
  settingsHelp,
  settingsTable,
} from '../../../shared/config';
import {
  defaultIn,
  ENVIRONMENTS,
  formatHostPort,
  REQUIRED,
  type Setting,
  type SettingKey,
} from '../../../shared/config/settings';

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  return expect.fail('expected a ConfigError');
}

const PRODUCTION = {
  ENVIRONMENT: 'production',
  DATABASE_URL: 'postgres://app@db.internal:5432/crucible',
  REDIS_URL: 'rediss://cache.internal:6380/0',
  S3_BUCKET: 'crucible-prod-outputs',
  AUTH_MODE: 'jwt',
  AUTH_JWT_KEYS_FILE: '/etc/crucible/jwks.json',
  AUTH_JWT_ISSUER: 'https://auth.internal',
  AUTH_JWT_AUDIENCE: 'crucible-storage',
  TLS_CERT_FILE: '/etc/crucible/tls.crt',
  TLS_KEY_FILE: '/etc/crucible/tls.key',
};

describe('loadConfig', () => {
  it('defaults to development with local servers, debug logs and s3rver settings', () => {
    const config = loadConfig({});
    expect(config.environment).to.equal('development');
    expect(config.logLevel).to.equal('debug');
    expect(config.host).to.equal('127.0.0.1');
    expect(config.commandPort).to.equal(50051);
    expect(config.queryPort).to.equal(50052);
    expect(config.databaseUrl).to.equal('postgres://postgres@127.0.0.1:5432/crucible');
    expect(config.queryDatabaseUrl).to.equal(config.databaseUrl);
    expect(config.redisUrl).to.equal('redis://127.0.0.1:6379/0');
    expect(config.s3).to.deep.include({
      endpoint: 'http://127.0.0.1:4569',
      bucket: 'crucible-outputs',
      forcePathStyle: true,
      checksumMode: 'WHEN_REQUIRED',
    });
  });

  it('uses the local servers with info logs for test', () => {
    const config = loadConfig({ ENVIRONMENT: 'test' });
    expect(config.environment).to.equal('test');
    expect(config.logLevel).to.equal('info');
    expect(config.redisUrl).to.equal('redis://127.0.0.1:6379/0');
    expect(config.s3.checksumMode).to.equal('WHEN_REQUIRED');
  });

  it('has the documented limits by default', () => {
    const { limits } = loadConfig({ ENVIRONMENT: 'test' });
    expect(limits).to.deep.include({
      maxCodeBytes: 1024 * 1024,
      maxOutputBytes: 16 * 1024 * 1024,
      maxStreamedOutputBytes: 1024 * 1024 * 1024,
      maxMetadataBytes: 64 * 1024,
      maxTimeoutSeconds: 3600,
      previewBytes: 1024,
      inlineOutputMaxBytes: 1024 * 1024,
    });
    expect(limits.languages).to.include.members(['python', 'javascript']);
    expect(limits.engines).to.include.members(['docker', 'gvisor']);
    expect(limits.evalIdPattern.test('01JABCDEF')).to.equal(true);
  });

  it('takes production settings from the environment only, with AWS-style S3 defaults', () => {
    const config = loadConfig(PRODUCTION);
    expect(config.environment).to.equal('production');
    expect(config.host).to.equal('0.0.0.0');
    expect(config.logLevel).to.equal('info');
    expect(config.databaseUrl).to.equal(PRODUCTION.DATABASE_URL);
    expect(config.redisUrl).to.equal(PRODUCTION.REDIS_URL);
    expect(config.s3).to.deep.include({
      endpoint: '',
      bucket: PRODUCTION.S3_BUCKET,
      accessKeyId: '',
      forcePathStyle: false,
      checksumMode: 'WHEN_SUPPORTED',
    });
  });

  it('quotes a refused URL back without its password', () => {
    const problems = problemsOf({
      ENVIRONMENT: 'test',
      DATABASE_URL: 'mysql://app:s3cr3t-p@ss@db.internal/x',
      REDIS_URL: 'redis://:hunter2@',
    });
    expect(problems).to.deep.equal([
      'DATABASE_URL must start with postgres:// or postgresql://, not "mysql://app:***@db.internal/x"',
      'REDIS_URL must be a valid URL, not "redis://:***@"',
    ]);
  });

  it('reads the nodes of a Redis Cluster (none: one Redis), IPv6 in brackets, and refuses what cannot work', () => {
    expect(loadConfig({ ENVIRONMENT: 'test' }).redisClusterNodes).to.deep.equal([]);
    const nodes = loadConfig({
      ENVIRONMENT: 'test',
      REDIS_CLUSTER_NODES: ' 10.0.0.1:7000,[::1]:7001 ,cache-2:6380',
    }).redisClusterNodes;
    expect(nodes).to.deep.equal([
      { host: '10.0.0.1', port: 7000 },
      { host: '::1', port: 7001 },
      { host: 'cache-2', port: 6380 },
    ]);
    // Written back as read: what the stack hands its children parses to the same nodes.
    const written = nodes.map(formatHostPort).join(',');
    expect(written).to.equal('10.0.0.1:7000,[::1]:7001,cache-2:6380');
    expect(loadConfig({ ENVIRONMENT: 'test', REDIS_CLUSTER_NODES: written }).redisClusterNodes).to.deep.equal(nodes);
    expect(problemsOf({ ENVIRONMENT: 'test', REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2' })).to.deep.equal([
      'REDIS_CLUSTER_NODES must list host:port addresses separated by commas ("10.0.0.2" is not one), not "10.0.0.1:7000,10.0.0.2"',
    ]);
    expect(problemsOf({ ENVIRONMENT: 'test', REDIS_CLUSTER_NODES: 'a:70000' })[0]).to.contain('"a:70000" is not one');
    expect(
      problemsOf({ ENVIRONMENT: 'test', REDIS_CLUSTER_NODES: 'a:7000', REDIS_URL: 'redis://127.0.0.1:6379/2' }),
    ).to.deep.equal([
      'REDIS_URL must name database 0 (or none) with REDIS_CLUSTER_NODES: a Redis Cluster has no other, not 2',
    ]);
  });

  describe('authentication and transport', () => {
    it('runs development and test without credentials or TLS, reflection on; production with neither reflection nor plaintext', () => {
      const local = loadConfig({ ENVIRONMENT: 'test' });
      expect(local.auth).to.deep.equal({ mode: 'none' });
      expect(local.transport).to.deep.equal({ kind: 'plaintext' });
      expect(local.reflection).to.equal(true);
      const production = loadConfig(PRODUCTION);
      expect(production.auth).to.deep.equal({
        mode: 'jwt',
        keysFile: PRODUCTION.AUTH_JWT_KEYS_FILE,
        issuer: PRODUCTION.AUTH_JWT_ISSUER,
        audience: PRODUCTION.AUTH_JWT_AUDIENCE,
        rolesClaim: 'roles',
        tenantClaim: 'tenant',
      });
      expect(production.transport).to.deep.equal({
        kind: 'tls',
        certFile: PRODUCTION.TLS_CERT_FILE,
        keyFile: PRODUCTION.TLS_KEY_FILE,
        clientCaFile: '',
      });
      expect(production.reflection).to.equal(false);
      expect(production.identityLimits).to.deep.equal({ requestsPerSecond: 2000, burst: 4000, maxStreams: 2000 });
    });

    it('refuses AUTH_MODE=none in production, even when asked for', () => {
      expect(problemsOf({ ...PRODUCTION, AUTH_MODE: 'none' })).to.deep.equal([
        'AUTH_MODE=none is refused in production: set AUTH_MODE=jwt or AUTH_MODE=mtls (docs/security.md)',
      ]);
    });

    it('names what jwt and mtls need, and TLS settings that only work together', () => {
      expect(problemsOf({ ENVIRONMENT: 'test', AUTH_MODE: 'jwt' })).to.deep.equal([
        'AUTH_JWT_KEYS_FILE is required when AUTH_MODE=jwt',
        'AUTH_JWT_ISSUER is required when AUTH_MODE=jwt',
        'AUTH_JWT_AUDIENCE is required when AUTH_MODE=jwt',
      ]);
      expect(problemsOf({ ENVIRONMENT: 'test', AUTH_MODE: 'mtls' })).to.deep.equal([
        'AUTH_MTLS_IDENTITIES_FILE is required when AUTH_MODE=mtls',
        'TLS_CLIENT_CA_FILE is required when AUTH_MODE=mtls: clients are known by their certificates',
      ]);
      expect(problemsOf({ ENVIRONMENT: 'test', TLS_CERT_FILE: '/c' })).to.deep.equal([
        'TLS_CERT_FILE and TLS_KEY_FILE must be set together',
      ]);
      expect(problemsOf({ ENVIRONMENT: 'test', TLS_CLIENT_CA_FILE: '/ca' })).to.deep.equal([
        'TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE: client certificates are asked for over TLS',
      ]);
      const mtls = loadConfig({
        ENVIRONMENT: 'test',
        AUTH_MODE: 'mtls',
        AUTH_MTLS_IDENTITIES_FILE: '/ids.json',
        TLS_CERT_FILE: '/c',
        TLS_KEY_FILE: '/k',
        TLS_CLIENT_CA_FILE: '/ca',
      });
      expect(mtls.auth).to.deep.equal({ mode: 'mtls', identitiesFile: '/ids.json' });
      expect(mtls.transport).to.deep.equal({ kind: 'tls', certFile: '/c', keyFile: '/k', clientCaFile: '/ca' });
    });
  });

  it('requires DATABASE_URL, REDIS_URL, S3_BUCKET, AUTH_MODE and TLS in production, reporting all at once', () => {
    const problems = problemsOf({ ENVIRONMENT: 'production' });
    expect(problems).to.have.length(5);
    const [database, redis, bucket, auth, tls] = problems;
    for (const p of [database, redis, bucket, auth]) expect(p).to.include('ENVIRONMENT=production');
    expect(problems.join('\n')).to.include('DATABASE_URL').and.include('REDIS_URL').and.include('S3_BUCKET');
    expect(auth).to.include('AUTH_MODE');
    expect(tls).to.equal('set TLS_CERT_FILE and TLS_KEY_FILE, or ALLOW_PLAINTEXT=true to serve without TLS');
  });

  it('treats an empty variable as unset', () => {
    const problems = problemsOf({ ...PRODUCTION, DATABASE_URL: '' });
    expect(problems).to.have.length(1);
    expect(problems[0]).to.include('DATABASE_URL');
    expect(loadConfig({ ENVIRONMENT: 'test', COMMAND_PORT: '' }).commandPort).to.equal(50051);
  });

  it('reads numbers and lists', () => {
    const config = loadConfig({
      COMMAND_PORT: '0',
      QUERY_PORT: '6000',
      MAX_CODE_BYTES: '100',
      INLINE_OUTPUT_MAX_BYTES: '2048',
      PREVIEW_BYTES: '16',
      LANGUAGES: ' python , cobol ,',
      ENGINES: 'docker',
      EVAL_ID_PATTERN: '^ev-[0-9]+$',
    });
    expect(config.commandPort).to.equal(0);
    expect(config.queryPort).to.equal(6000);
    expect(config.limits).to.deep.include({ maxCodeBytes: 100, inlineOutputMaxBytes: 2048, previewBytes: 16 });
    expect(config.limits.languages).to.deep.equal(['python', 'cobol']);
    expect(config.limits.engines).to.deep.equal(['docker']);
    expect(config.limits.evalIdPattern.test('ev-1')).to.equal(true);
    expect(config.limits.evalIdPattern.test('eval-1')).to.equal(false);
  });

  it('rejects numbers that are not whole or out of range, naming key and value', () => {
    for (const [key, value] of [
      ['COMMAND_PORT', 'abc'],
      ['COMMAND_PORT', '65536'],
      ['QUERY_PORT', '-1'],
      ['QUERY_PORT', '1.5'],
      ['MAX_CODE_BYTES', '0'],
      ['PREVIEW_BYTES', '1e9'],
    ] as const) {
      const problems = problemsOf({ ENVIRONMENT: 'test', [key]: value });
      expect(problems, `${key}=${value}`).to.have.length(1);
      expect(problems[0]).to.include(key).and.include(`"${value}"`);
    }
  });

  it('bounds every PostgreSQL session by default, migrations without a statement timeout of their own', () => {
    const expected = {
      statementTimeoutMs: 30_000,
      lockTimeoutMs: 5_000,
      idleInTransactionTimeoutMs: 10_000,
      keepAliveDelayMs: 10_000,
      migrationStatementTimeoutMs: 0,
    };
    expect(loadConfig({ ENVIRONMENT: 'test' }).postgres).to.deep.equal(expected);
    expect(loadConfig(PRODUCTION).postgres).to.deep.equal(expected);
    // What tools and tests open sessions with when they have no Config: the same table's defaults.
    expect(defaultPostgresSession()).to.deep.equal(expected);
  });

  it('reads the PostgreSQL timeouts and refuses ones that would turn a bound off', () => {
    const config = loadConfig({
      ENVIRONMENT: 'test',
      PG_STATEMENT_TIMEOUT_MS: '1500',
      PG_LOCK_TIMEOUT_MS: '250',
      PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: '2000',
      PG_KEEPALIVE_DELAY_MS: '5000',
      PG_MIGRATION_STATEMENT_TIMEOUT_MS: '600000',
    });
    expect(config.postgres).to.deep.equal({
      statementTimeoutMs: 1500,
      lockTimeoutMs: 250,
      idleInTransactionTimeoutMs: 2000,
      keepAliveDelayMs: 5000,
      migrationStatementTimeoutMs: 600_000,
    });
    expect(Object.isFrozen(config.postgres)).to.equal(true);
    // 0 is PostgreSQL's "no limit": refused for the services' sessions.
    for (const key of ['PG_STATEMENT_TIMEOUT_MS', 'PG_LOCK_TIMEOUT_MS', 'PG_IDLE_IN_TRANSACTION_TIMEOUT_MS']) {
      const problems = problemsOf({ ENVIRONMENT: 'test', [key]: '0' });
      expect(problems, key).to.have.length(1);
      expect(problems[0]).to.include(key).and.include('"0"');
    }
    expect(problemsOf({ ENVIRONMENT: 'test', PG_KEEPALIVE_DELAY_MS: '10s' })[0]).to.include('PG_KEEPALIVE_DELAY_MS');
  });

  it('reads the executor health TTL and the reaper grace; a grace of 0 turns the reaper off, a TTL of 0 is refused', () => {
    expect(loadConfig({ ENVIRONMENT: 'test' }).executors).to.deep.equal({ healthTtlSeconds: 30, lostGraceSeconds: 60 });
    const config = loadConfig({
      ENVIRONMENT: 'test',
      EXECUTOR_HEALTH_TTL_SECONDS: '1',
      EXECUTOR_LOST_GRACE_SECONDS: '0',
    });
    expect(config.executors).to.deep.equal({ healthTtlSeconds: 1, lostGraceSeconds: 0 });
    expect(Object.isFrozen(config.executors)).to.equal(true);
    expect(problemsOf({ ENVIRONMENT: 'test', EXECUTOR_HEALTH_TTL_SECONDS: '0' })[0]).to.include(
      'EXECUTOR_HEALTH_TTL_SECONDS',
    );
    expect(problemsOf({ ENVIRONMENT: 'test', EXECUTOR_LOST_GRACE_SECONDS: '-1' })[0]).to.include(
      'EXECUTOR_LOST_GRACE_SECONDS',
    );
  });

  it('reads object encryption, the public endpoint and URL expiries, and refuses combinations that cannot work', () => {
    const defaults = loadConfig({ ENVIRONMENT: 'test' });
    expect(defaults.s3.sse).to.deep.equal({ kind: 'none' });
    expect(defaults.s3.publicEndpoint).to.equal('');
    expect(defaults.outputUrls).to.deep.equal({
      defaultExpirySeconds: 900,
      maxExpirySeconds: 3600,
      uploadExpirySeconds: 3600,
    });
    expect(defaults.limits.inlineCodeMaxBytes).to.equal(100 * 1024);
    const kms = loadConfig({
      ENVIRONMENT: 'test',
      S3_SSE: 'aws:kms',
      S3_SSE_KMS_KEY_ID: 'alias/crucible',
      S3_PUBLIC_ENDPOINT: 'https://s3.example.com',
    });
    expect(kms.s3.sse).to.deep.equal({ kind: 'aws:kms', keyId: 'alias/crucible' });
    expect(kms.s3.publicEndpoint).to.equal('https://s3.example.com');
    expect(loadConfig({ ENVIRONMENT: 'test', S3_SSE: 'AES256' }).s3.sse).to.deep.equal({ kind: 'AES256' });
    expect(problemsOf({ ENVIRONMENT: 'test', S3_SSE: 'aes' })[0]).to.include('S3_SSE must be none, AES256 or aws:kms');
    expect(problemsOf({ ENVIRONMENT: 'test', S3_SSE_KMS_KEY_ID: 'k' })[0]).to.include('S3_SSE is not aws:kms');
    expect(
      problemsOf({
        ENVIRONMENT: 'test',
        OUTPUT_URL_DEFAULT_EXPIRY_SECONDS: '7200',
        OUTPUT_URL_MAX_EXPIRY_SECONDS: '3600',
      })[0],
    ).to.include('OUTPUT_URL_DEFAULT_EXPIRY_SECONDS (7200) must not exceed OUTPUT_URL_MAX_EXPIRY_SECONDS (3600)');
    expect(problemsOf({ ENVIRONMENT: 'test', OUTPUT_URL_MAX_EXPIRY_SECONDS: '604801' })[0]).to.include(
      'OUTPUT_URL_MAX_EXPIRY_SECONDS',
    );
  });

  it('reports every problem at once', () => {
    const problems = problemsOf({
      ENVIRONMENT: 'production',
      COMMAND_PORT: 'x',
      QUERY_PORT: '99999',
      LOG_LEVEL: 'loud',
      S3_FORCE_PATH_STYLE: 'maybe',
      S3_CHECKSUM_MODE: 'ALWAYS',
      DATABASE_URL: 'mysql://db/x',
      REDIS_URL: 'not a url',
      EVAL_ID_PATTERN: '([',
      S3_ACCESS_KEY_ID: 'only-the-id',
      LANGUAGES: ' , ',
    });
    const text = problems.join('\n');
    for (const key of [
      'COMMAND_PORT',
      'QUERY_PORT',
      'LOG_LEVEL',
      'S3_FORCE_PATH_STYLE',
      'S3_CHECKSUM_MODE',
      'DATABASE_URL',
      'REDIS_URL',
      'EVAL_ID_PATTERN',
      'S3_ACCESS_KEY_ID',
      'LANGUAGES',
      'S3_BUCKET',
      'AUTH_MODE',
      'TLS_CERT_FILE',
    ]) {
      expect(text).to.include(key);
    }
    expect(problems).to.have.length(13);
  });

  it('puts every problem in the error message, one per line', () => {
    try {
      loadConfig({ ENVIRONMENT: 'staging' });
      expect.fail('expected a ConfigError');
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      expect((err as Error).message).to.include('ENVIRONMENT must be development, test or production, not "staging"');
    }
  });

  it('returns a frozen object', () => {
    const config = loadConfig({ ENVIRONMENT: 'test' });
    expect(Object.isFrozen(config)).to.equal(true);
    expect(Object.isFrozen(config.s3)).to.equal(true);
    expect(Object.isFrozen(config.limits)).to.equal(true);
  });

  it('takes every default from the settings table, and each default passes its own parser', () => {
    for (const key of Object.keys(SETTINGS) as SettingKey[]) {
      for (const environment of ENVIRONMENTS) {
        const value = defaultIn(key, environment);
        if (value === undefined || value === REQUIRED) continue;
        expect(
          () => (SETTINGS[key] as Setting<unknown>).parser.parse(value),
          `${key} in ${environment}`,
        ).to.not.throw();
      }
    }
    // A default changed in the table is the default loadConfig uses.
    expect(loadConfig({ ENVIRONMENT: 'test' }).maxPendingCommands).to.equal(
      Number(SETTINGS.MAX_PENDING_COMMANDS.defaults.all),
    );
  });

  it('lists every setting in --help and in the README table, with its default', () => {
    const help = settingsHelp();
    const table = settingsTable();
    for (const key of Object.keys(SETTINGS)) {
      expect(help).to.match(new RegExp(`^  ${key} `, 'm'));
      expect(table).to.include(`| \`${key}\` |`);
    }
    expect(help)
      .to.include('STREAM_BUFFER_LIMIT')
      .and.to.match(/STREAM_BUFFER_LIMIT .*\(default: 1000\)/);
    expect(table).to.match(/\| `DATABASE_URL` \| .* \| dev\/test `postgres:.*`; required in production \|/);
  });
});
