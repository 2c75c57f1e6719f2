import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Client } from 'pg';
import { EvaluationStatus } from '../../shared/generated/crucible/storage/v1/evaluation';
import { OutputKind, type ReadOutputResponse } from '../../shared/generated/crucible/storage/v1/query_service';
import { call, readBytes } from '../support/clients';
import { startServices, type RunningServices } from '../support/services';

const CLI = join(__dirname, '..', '..', 'services', 'command', 'cli', 'import-legacy.js');

const STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled'] as const;
const WANTED: Record<(typeof STATUSES)[number], EvaluationStatus> = {
  queued: EvaluationStatus.EVALUATION_STATUS_QUEUED,
  running: EvaluationStatus.EVALUATION_STATUS_RUNNING,
  completed: EvaluationStatus.EVALUATION_STATUS_COMPLETED,
  failed: EvaluationStatus.EVALUATION_STATUS_FAILED,
  cancelled: EvaluationStatus.EVALUATION_STATUS_CANCELLED,
};
const GOOD = 20;
/** Above the inline output limit: goes to S3 like any large output. */
const LARGE_OUTPUT = 'x'.repeat(200 * 1024);

/** The old platform's file store, as its FileStorage wrote it, with broken files among the good ones. */
function writeLegacyTree(dir: string): { broken: Record<string, string> } {
  for (const sub of ['evaluations', 'events', 'metadata']) mkdirSync(join(dir, sub), { recursive: true });
  const write = (sub: string, name: string, value: unknown): void =>
    writeFileSync(join(dir, sub, name), typeof value === 'string' ? value : JSON.stringify(value, null, 2));
  for (let i = 0; i < GOOD; i += 1) {
    const id = `old-${String(i).padStart(3, '0')}`;
    const status = STATUSES[i % STATUSES.length] as string;
    write('evaluations', `${id}.json`, {
      id,
      status,
      code: `print(${i})`,
      output: i === 2 ? LARGE_OUTPUT : status === 'completed' ? `out ${i}` : '',
      error: status === 'failed' ? `Traceback: boom ${i}` : '',
      created_at: `2024-03-0${1 + (i % 9)}T10:00:00Z`,
      started_at: status === 'queued' || status === 'cancelled' ? null : '2024-03-01T10:00:05Z',
      completed_at: status === 'completed' || status === 'failed' ? '2024-03-01T10:00:09Z' : null,
      execution_time: status === 'completed' ? 4.2 : null,
    });
    if (i % 2 === 0)
      write('events', `${id}.json`, [
        { type: 'queued', message: 'Evaluation queued', timestamp: '2024-03-01T10:00:00Z' },
        { type: 'log', message: `step ${i}`, timestamp: '2024-03-01T10:00:06Z' },
      ]);
    if (i % 3 === 0) write('metadata', `${id}.json`, { user: `user-${i}`, tags: ['legacy', 'migrated'] });
  }
  write('evaluations', 'broken-json.json', '{ "id": "broken-json", ');
  write('evaluations', 'no-code.json', { id: 'no-code', status: 'queued' });
  write('evaluations', 'bad-status.json', { id: 'bad-status', status: 'exploded', code: 'x' });
  write('evaluations', 'wrong-name.json', { id: 'another-name', status: 'queued', code: 'x' });
  write('evaluations', 'bad-events.json', { id: 'bad-events', status: 'queued', code: 'x' });
  write('events', 'bad-events.json', { not: 'a list' });
  write('evaluations', 'bad id!.json', { id: 'bad id!', status: 'queued', code: 'x' });
  mkdirSync(join(dir, 'evaluations', 'a-directory.json'));
  return {
    broken: {
      'broken-json.json': 'the evaluation file is not JSON',
      'no-code.json': '"code" is missing',
      'bad-status.json': '"status" "exploded" is none of',
      'wrong-name.json': 'does not match the file name',
      'bad-events.json': 'its events file must hold a JSON list',
      'bad id!.json': 'the service refused its submit: INVALID_ARGUMENT',
      'a-directory.json': 'cannot be read: EISDIR',
    },
  };
}

/** Runs the import; its exit status and what it printed. */
function importLegacy(dir: string, address: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, dir, '--address', address], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('e2e: npm run import-legacy (the old platform file store, through the command path)', function () {
  this.timeout(120_000);
  let services: RunningServices;
  const root = mkdtempSync(join(tmpdir(), 'crucible-legacy-'));

  before(async () => {
    services = await startServices();
  });
  after(async () => {
    await services?.close();
    rmSync(root, { recursive: true, force: true });
  });

  async function eventCount(): Promise<number> {
    const db = new Client({ connectionString: services.environment.config.databaseUrl });
    await db.connect();
    try {
      return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM evaluation_events')).rows[0]?.n ?? 0;
    } finally {
      await db.end();
    }
  }

  it('imports every good evaluation once, reports each broken file with why, and repeats nothing when run again', async () => {
    const full = join(root, 'store');
    const { broken } = writeLegacyTree(full);
    // A first run that stopped half-way: only the first half of the files were there.
    const half = join(root, 'half');
    mkdirSync(join(half, 'evaluations'), { recursive: true });
    for (let i = 0; i < GOOD / 2; i += 1) {
      const name = `old-${String(i).padStart(3, '0')}.json`;
      cpSync(join(full, 'evaluations', name), join(half, 'evaluations', name));
    }
    cpSync(join(full, 'events'), join(half, 'events'), { recursive: true });
    cpSync(join(full, 'metadata'), join(half, 'metadata'), { recursive: true });
    const first = await importLegacy(half, services.command.address);
    expect(first.code, first.stderr).to.equal(0);
    expect(first.stdout).to.contain(`${GOOD / 2} evaluations imported`);

    const run = await importLegacy(full, services.command.address);
    expect(run.code, run.stderr).to.equal(2);
    for (const [file, reason] of Object.entries(broken)) {
      const line = run.stdout.split('\n').find((l) => l.startsWith(`skipped ${join(full, 'evaluations', file)}:`));
      expect(line, `${file} in\n${run.stdout}`).to.be.a('string').and.contain(reason);
    }
    expect(run.stdout).to.contain(`${GOOD} evaluations imported (now or by an earlier run), 7 skipped, 0 not reached`);
    const events = await eventCount();

    const { query } = services.clients;
    for (let i = 0; i < GOOD; i += 1) {
      const evalId = `old-${String(i).padStart(3, '0')}`;
      const status = STATUSES[i % STATUSES.length] as (typeof STATUSES)[number];
      const { evaluation } = await call(query, query.getEvaluation, { evalId, minPosition: String(events) });
      expect(evaluation?.status, evalId).to.equal(WANTED[status]);
      const legacy = (evaluation?.metadata as { legacy?: Record<string, unknown> } | undefined)?.legacy;
      expect(legacy?.created_at, evalId).to.equal(`2024-03-0${1 + (i % 9)}T10:00:00.000Z`);
      expect(legacy?.status).to.equal(status);
      if (i % 2 === 0) expect(legacy?.events, evalId).to.have.length(2);
      if (i % 3 === 0)
        expect(evaluation?.metadata).to.deep.include({ user: `user-${i}`, tags: ['legacy', 'migrated'] });
      if (status === 'failed') expect(evaluation?.errorPreview).to.equal(`Traceback: boom ${i}`);
    }
    const output = await readBytes(
      query.readOutput({ evalId: 'old-002', kind: OutputKind.OUTPUT_KIND_OUTPUT, offset: '0', length: '0' }),
      (message: ReadOutputResponse) => message.chunk,
    );
    expect(output.toString()).to.equal(LARGE_OUTPUT);
    const completed = await call(query, query.countEvaluations, {
      filter: {
        statuses: [EvaluationStatus.EVALUATION_STATUS_COMPLETED],
        language: '',
        engine: '',
        executorId: '',
        metadata: {},
      },
      minPosition: String(events),
    });
    expect(completed.count).to.equal(String(GOOD / STATUSES.length));

    // Again: the same report, and not one event more.
    const again = await importLegacy(full, services.command.address);
    expect(again.code).to.equal(2);
    expect(again.stdout).to.contain(`${GOOD} evaluations imported (now or by an earlier run), 7 skipped`);
    expect(await eventCount()).to.equal(events);
  });

  it('says what is wrong with its arguments', async () => {
    const missing = await importLegacy(join(root, 'nowhere'), services.command.address);
    expect(missing.code).to.equal(64);
    expect(missing.stderr).to.contain('has no evaluations/ directory');
  });
});
