import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { Pool } from 'pg';
import { UnavailableError } from '../../../shared/errors';
import { createS3Client } from '../../../shared/s3';
import type { BlobStore, EvaluationStore } from '../../../services/command/application/ports';
import { validateCompleteHeader } from '../../../services/command/domain';
import { createPostgresEvaluationStore } from '../../../services/command/postgres/evaluation-store';
import { createS3BlobStore } from '../../../shared/blobs';
import { commandsOf, createHarness, denseLog, eventCount, s3Only, type Harness } from './harness';

const MiB = 1024 * 1024;

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  if (address === null || typeof address === 'string') return expect.fail('no port');
  return address.port;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => expect.fail(`expected a rejection, got ${JSON.stringify(value)}`),
    (err: unknown) => err,
  );
}

/** Counts what reaches a blob store. */
function countingBlobs(inner: BlobStore): { blobs: BlobStore; puts: string[] } {
  const puts: string[] = [];
  return {
    puts,
    blobs: {
      put: (key, content) => {
        puts.push(key);
        return inner.put(key, content);
      },
      putStream: (key, size, source) => {
        puts.push(key);
        return inner.putStream(key, size, source);
      },
      delete: (key, home) => inner.delete(key, home),
    },
  };
}

describe('command executor: unavailable dependencies', function () {
  this.timeout(30_000);
  let h: Harness;

  before(async () => {
    h = await createHarness();
  });

  after(async () => {
    await h.close();
  });

  afterEach(async () => {
    expect((await denseLog(h.sql)).problems, 'event log stays dense').to.deep.equal([]);
  });

  async function state(evalId: string): Promise<{ status: string; revision: string; bodies: number } | undefined> {
    const { rows } = await h.sql.query<{ status: string; revision: string; bodies: number }>(
      `SELECT status, revision::text,
              (SELECT count(*)::int FROM evaluation_bodies b WHERE b.eval_id = e.eval_id AND b.kind <> 'code') AS bodies
         FROM evaluations e WHERE eval_id = $1`,
      [evalId],
    );
    return rows[0];
  }

  it('answers UNAVAILABLE when PostgreSQL cannot be reached, and uploads nothing', async () => {
    const pool = new Pool({
      connectionString: `postgres://postgres@127.0.0.1:${await closedPort()}/crucible`,
      connectionTimeoutMillis: 2000,
    });
    try {
      const counted = countingBlobs(h.blobs);
      const commands = commandsOf(
        h.executorWith({ store: createPostgresEvaluationStore(pool), blobs: counted.blobs }),
        h.env.config.limits,
      );
      for (const attempt of [
        () => commands.submit({ evalId: 'pg-down' }),
        () => commands.start({ evalId: 'pg-down' }),
        () => commands.complete({ evalId: 'pg-down', output: randomBytes(2 * MiB) }),
      ]) {
        const err = await rejection(attempt());
        expect(err).to.be.instanceOf(UnavailableError);
        expect((err as Error).message).to.match(/PostgreSQL is unavailable/);
      }
      expect(counted.puts, 'nothing was uploaded').to.deep.equal([]);
      expect(await state('pg-down')).to.equal(undefined);
    } finally {
      await pool.end();
    }
  });

  it('answers UNAVAILABLE when S3 cannot be reached and writes nothing to PostgreSQL; a retry then succeeds', async () => {
    const unreachable = createS3Client({ ...h.env.config.s3, endpoint: `http://127.0.0.1:${await closedPort()}` });
    try {
      await h.commands.submit({ evalId: 's3-down' });
      await h.commands.start({ evalId: 's3-down' });
      const count = await eventCount(h.sql);
      const output = randomBytes(3 * MiB);
      const commands = commandsOf(
        h.executorWith({ blobs: s3Only(createS3BlobStore(unreachable, h.env.config.s3.bucket)) }),
        h.env.config.limits,
      );

      const err = await rejection(commands.complete({ evalId: 's3-down', output, exitCode: 0 }));
      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as Error).message, 'the bucket name stays out of the answer').to.not.include(h.env.config.s3.bucket);
      expect(await eventCount(h.sql)).to.equal(count);
      expect(await state('s3-down')).to.deep.equal({ status: 'running', revision: '2', bodies: 0 });

      // The executor retries once S3 is back: nothing half-written stands in its way.
      const completed = await h.commands.complete({ evalId: 's3-down', output, exitCode: 0 });
      expect(completed.revision).to.equal('3');
      expect(await state('s3-down')).to.deep.equal({ status: 'completed', revision: '3', bodies: 1 });
    } finally {
      unreachable.destroy();
    }
  });

  it('leaves no reference to an uploaded object when the write fails after the upload', async () => {
    await h.commands.submit({ evalId: 'write-fails' });
    const count = await eventCount(h.sql);
    const failingStore: EvaluationStore = {
      load: (evalId, requestId, tenant) => h.store.load(evalId, requestId, tenant),
      append: () => Promise.reject(new UnavailableError('PostgreSQL is unavailable (append); retry')),
    };
    const counted = countingBlobs(h.blobs);
    const output = randomBytes(2 * MiB);
    const commands = commandsOf(h.executorWith({ store: failingStore, blobs: counted.blobs }), h.env.config.limits);

    expect(await rejection(commands.complete({ evalId: 'write-fails', output }))).to.be.instanceOf(UnavailableError);
    expect(counted.puts, 'the blob went up before the write').to.have.length(1);
    expect(await eventCount(h.sql)).to.equal(count);
    expect(await state('write-fails')).to.deep.equal({ status: 'queued', revision: '1', bodies: 0 });

    // The retry uploads to the same key and records it.
    const retry = countingBlobs(h.blobs);
    await commandsOf(h.executorWith({ blobs: retry.blobs }), h.env.config.limits).complete({
      evalId: 'write-fails',
      output,
    });
    expect(retry.puts).to.deep.equal(counted.puts);
    const { rows } = await h.sql.query<{ s3_key: string }>(
      `SELECT s3_key FROM evaluation_bodies WHERE eval_id = 'write-fails' AND kind = 'output'`,
    );
    expect(rows[0]?.s3_key).to.equal(counted.puts[0]);
    const object = await h.s3.send(new GetObjectCommand({ Bucket: h.env.config.s3.bucket, Key: rows[0]?.s3_key }));
    expect(Buffer.from((await object.Body?.transformToByteArray()) ?? []).equals(output)).to.equal(true);
  });
});

describe('command executor: overload, with no admission queue', function () {
  this.timeout(30_000);
  let h: Harness;

  before(async () => {
    h = await createHarness({ MAX_PENDING_COMMANDS: '2', MAX_QUEUED_COMMANDS: '0' });
  });

  after(async () => {
    await h.close();
  });

  /**
   * The harness's store, but loads of the ids `holds` picks wait at a gate until `open()`:
   * their commands stay in progress. `twoArrived` resolves once two of them wait.
   */
  function gatedStore(holds: (evalId: string | undefined) => boolean): {
    store: EvaluationStore;
    open: () => void;
    twoArrived: Promise<void>;
    readonly arrived: number;
  } {
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let arrivedTwo: () => void = () => undefined;
    const twoArrived = new Promise<void>((resolve) => (arrivedTwo = resolve));
    let arrived = 0;
    return {
      store: {
        load: async (evalId, requestId, tenant) => {
          if (holds(evalId)) {
            if (++arrived === 2) arrivedTwo();
            await gate;
          }
          return h.store.load(evalId, requestId, tenant);
        },
        append: (request) => h.store.append(request),
      },
      open: () => open(),
      twoArrived,
      get arrived() {
        return arrived;
      },
    };
  }

  it('refuses commands past MAX_PENDING_COMMANDS at once with UNAVAILABLE, writes none of them, and admits again', async () => {
    // Two commands held at their load stay in progress (a submit of a new id would not load).
    await h.commands.submit({ evalId: 'busy-1' });
    await h.commands.submit({ evalId: 'busy-2' });
    const gated = gatedStore(() => true);
    const commands = commandsOf(h.executorWith({ store: gated.store }), h.env.config.limits);
    const first = commands.cancel({ evalId: 'busy-1', reason: 'held' });
    const second = commands.cancel({ evalId: 'busy-2', reason: 'held' });
    await gated.twoArrived;

    const refused = await rejection(commands.submit({ evalId: 'refused' }));
    expect(refused).to.be.instanceOf(UnavailableError);
    expect((refused as Error).message).to.match(/overloaded: 2 commands in progress \(MAX_PENDING_COMMANDS\)/);
    expect(gated.arrived).to.equal(2, 'the refused command never reached the store');

    gated.open();
    expect((await first).evalId).to.equal('busy-1');
    expect((await second).evalId).to.equal('busy-2');
    expect((await commands.submit({ evalId: 'after' })).evalId).to.equal('after', 'admitted once the load is gone');
    const { rows } = await h.sql.query<{ eval_id: string }>('SELECT eval_id FROM evaluations ORDER BY eval_id');
    expect(rows.map((r) => r.eval_id)).to.deep.equal(['after', 'busy-1', 'busy-2']);
  });

  it('does not count a streamed output while its bytes arrive; refused after them, its upload is deleted', async () => {
    await h.commands.submit({ evalId: 'streamed-late' });
    const gated = gatedStore((evalId) => evalId?.startsWith('slot-') === true);
    const executor = h.executorWith({ store: gated.store });
    const commands = commandsOf(executor, h.env.config.limits);

    // An upload that stalls part-way, as a slow executor's would.
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    let firstSent: () => void = () => undefined;
    const sentFirst = new Promise<void>((resolve) => (firstSent = resolve));
    async function* slowly(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(MiB, 1);
      firstSent();
      await released;
      yield Buffer.alloc(MiB, 2);
    }
    const header = validateCompleteHeader(
      { evalId: 'streamed-late', exitCode: 0, outputSize: String(2 * MiB), requestId: '' },
      h.env.config.limits,
    );
    const streamed = rejection(executor.completeStreamed(header, slowly()));
    await sentFirst;

    // Both slots are free for commands while the bytes arrive.
    await h.commands.submit({ evalId: 'slot-1' });
    await h.commands.submit({ evalId: 'slot-2' });
    const first = commands.cancel({ evalId: 'slot-1', reason: 'held' });
    const second = commands.cancel({ evalId: 'slot-2', reason: 'held' });
    await gated.twoArrived;

    release();
    const refused = await streamed;
    expect(refused).to.be.instanceOf(UnavailableError);
    expect((refused as Error).message).to.match(/overloaded: 2 commands in progress/);
    const listed = await h.s3.send(
      new ListObjectsV2Command({ Bucket: h.env.config.s3.bucket, Prefix: 'evaluations/streamed-late/' }),
    );
    expect(listed.KeyCount ?? 0, 'the refused upload is deleted').to.equal(0);

    gated.open();
    expect((await first).evalId).to.equal('slot-1');
    expect((await second).evalId).to.equal('slot-2');
  });
});
