import { once } from 'node:events';
import { get as httpGet } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Client } from 'pg';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import {
  EvaluationQueryServiceClient,
  OutputKind,
  type ReadOutputResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { createS3Client } from '../../shared/s3';
import { measureCpu, type CpuUse } from '../support/cpu';
import { completeRequest, runningEvaluation } from '../support/evaluations';
import { SETUP_DEADLINE_MS, unary } from '../support/grpc';
import { watchPeakMemory } from '../support/memory';
import { figure, type Check, type Row } from '../support/report';
import type { BenchContext, Scenario } from '../support/scenario';
import { createBenchStack, startForBytes, type BenchStack, type ServiceClients } from '../support/stack';
import { median } from '../support/stats';
import { textOutput } from '../../test/support/text';

const MB = 1e6;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** Parts of an upload, by the service and by the raw floor alike. */
const PART_BYTES = 8 * MiB;
const PARTS_IN_FLIGHT = 4;

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const sizeName = (size: number): string => (size >= GiB ? `${size / GiB} GiB` : `${(size / MiB).toFixed(0)} MiB`);

async function seconds(work: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await work();
  return (performance.now() - start) / 1000;
}

/** CompleteEvaluationStream of `size` bytes that `chunkAt(offset)` makes as they are sent (never held whole). */
function completeStreamed(
  command: EvaluationCommandServiceClient,
  evalId: string,
  size: number,
  chunkAt: (offset: number, length: number) => Buffer,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = command.completeEvaluationStream((err) => (err !== null ? reject(err) : resolve()));
    void (async () => {
      stream.write({ header: { evalId, exitCode: 0, outputSize: String(size), requestId: '' } });
      for (let at = 0; at < size; at += MiB) {
        if (!stream.write({ outputChunk: chunkAt(at, Math.min(MiB, size - at)) })) await once(stream, 'drain');
      }
      stream.end();
    })().catch(reject);
  });
}

/** ReadOutput of a range (length 0: to the end), hashed as it comes; resolves with its SHA-256 and size. */
function readOutputHashed(
  query: EvaluationQueryServiceClient,
  evalId: string,
  offset = 0,
  length = 0,
): Promise<{ sha: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const stream = query.readOutput({
      evalId,
      kind: OutputKind.OUTPUT_KIND_OUTPUT,
      offset: String(offset),
      length: String(length),
    });
    stream.on('data', (m: ReadOutputResponse) => {
      hash.update(m.chunk);
      bytes += m.chunk.length;
    });
    stream.on('error', reject);
    stream.on('end', () => resolve({ sha: hash.digest('hex'), bytes }));
  });
}

/**
 * A GET of a presigned URL with node:http, the HTTP client the SDK's GetObject uses too (fetch's
 * web streams cost this machine about half the throughput): the floor and the URL differ in the
 * request only.
 */
function getHashed(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpGet(url, (answer) => {
      if (answer.statusCode !== 200) {
        answer.resume();
        reject(new Error(`GET of a presigned URL answered ${answer.statusCode}`));
        return;
      }
      const hash = createHash('sha256');
      answer.on('data', (chunk: Buffer) => hash.update(chunk));
      answer.on('end', () => resolve(hash.digest('hex')));
      answer.on('error', reject);
    }).on('error', reject);
  });
}

async function getObjectHashed(s3: S3Client, bucket: string, key: string): Promise<string> {
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = createHash('sha256');
  for await (const chunk of object.Body as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

/** Runs `work(i)` for i in 0..count-1, `width` at a time. */
async function inParallel(count: number, width: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, count) }, async () => {
      for (let i = next++; i < count; i = next++) await work(i);
    }),
  );
}

/** The raw floor of a direct upload: the SDK's multipart upload of the same parts, as many at once. */
async function rawMultipart(s3: S3Client, bucket: string, key: string, body: Buffer): Promise<void> {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const parts = Math.ceil(body.length / PART_BYTES);
  const etags: string[] = [];
  await inParallel(parts, PARTS_IN_FLIGHT, async (i) => {
    const part = body.subarray(i * PART_BYTES, (i + 1) * PART_BYTES);
    const sent = await s3.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId,
        PartNumber: i + 1,
        Body: part,
        ContentLength: part.length,
      }),
    );
    etags[i] = sent.ETag ?? '';
  });
  await s3.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId,
      MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
    }),
  );
}

/** A direct upload through the service: CreateOutputUpload, the parts PUT to their URLs, CompleteEvaluation. */
async function directUpload(
  clients: ServiceClients,
  evalId: string,
  body: Buffer,
): Promise<{ put: number; complete: number }> {
  const { command } = clients;
  const created = await unary(
    command,
    command.createOutputUpload,
    { evalId, size: String(body.length), sha256: sha256(body) },
    SETUP_DEADLINE_MS,
  );
  const etags: { partNumber: number; etag: string }[] = [];
  const put = await seconds(() =>
    inParallel(created.parts.length, PARTS_IN_FLIGHT, async (i) => {
      const part = created.parts[i]!;
      const offset = Number(part.offset);
      const answer = await fetch(part.url, { method: 'PUT', body: body.subarray(offset, offset + Number(part.size)) });
      if (answer.status !== 200) throw new Error(`PUT of part ${part.partNumber} answered ${answer.status}`);
      etags.push({ partNumber: part.partNumber, etag: answer.headers.get('etag') ?? '' });
    }),
  );
  const complete = await seconds(() =>
    unary(
      command,
      command.completeEvaluation,
      { ...completeRequest(evalId, Buffer.alloc(0)), upload: { uploadId: created.uploadId, parts: etags } },
      SETUP_DEADLINE_MS,
    ),
  );
  return { put, complete };
}

const cpuMs = (use: CpuUse, name: string): number => (use.groups.find((g) => g.name === name)?.seconds ?? 0) * 1000;

export const bytes: Scenario = {
  name: 'bytes',
  description:
    'presigned GETs and direct multipart uploads beside raw S3, a 1 MiB range of a large output beside a 1 MiB output, compression of text and random bodies, and (full runs) a 6 GiB streamed output',
  async run(ctx: BenchContext) {
    const smoke = ctx.smoke;
    const large = smoke ? 16 * MiB : 256 * MiB;
    const rounds = smoke ? 1 : 3;
    const stack: BenchStack = await createBenchStack(ctx, {
      // A 1 MiB output is kept in S3 (as the large one is): the range and the whole read the same store.
      INLINE_OUTPUT_MAX_BYTES: String(512 * 1024),
      S3_PART_BYTES: String(PART_BYTES),
      S3_PARTS_IN_FLIGHT: String(PARTS_IN_FLIGHT),
      MAX_STREAMED_OUTPUT_BYTES: String(8 * GiB),
    });
    const s3 = createS3Client(stack.environment.config.s3);
    const bucket = stack.environment.config.s3.bucket;
    try {
      const { command, query, clients, closeClients } = await startForBytes(stack);
      const rows: Row[] = [];
      const checks: Check[] = [];
      const notes: string[] = [];
      try {
        // --- Presigned GET of a large output, and a range of it ---------------------------------
        const body = randomBytes(large);
        const bodySha = sha256(body);
        const largeId = await runningEvaluation(clients.command, 1);
        ctx.progress(`bytes: storing a ${sizeName(large)} output`);
        await completeStreamed(clients.command, largeId, large, (at, length) => body.subarray(at, at + length));
        const signed = await unary(
          clients.query,
          clients.query.getOutputUrl,
          { evalId: largeId, kind: OutputKind.OUTPUT_KIND_OUTPUT },
          SETUP_DEADLINE_MS,
        );
        // Path-style (/bucket/key): the raw floor reads the very object the URL names.
        const key = decodeURIComponent(new URL(signed.url).pathname.split('/').slice(2).join('/'));
        const presigned: number[] = [];
        const raw: number[] = [];
        for (let round = 0; round < rounds; round += 1) {
          ctx.progress(`bytes: presigned GET and raw GetObject of ${sizeName(large)}, round ${round + 1}/${rounds}`);
          let sha = '';
          presigned.push(await seconds(async () => (sha = await getHashed(signed.url))));
          if (sha !== bodySha) throw new Error('the presigned URL served other bytes');
          raw.push(await seconds(async () => (sha = await getObjectHashed(s3, bucket, key))));
          if (sha !== bodySha) throw new Error('GetObject served other bytes');
        }
        const mbps = (list: number[], size = large): number => size / MB / median(list);
        const presignedRatio = mbps(presigned) / mbps(raw);
        rows.push({
          scenario: 'bytes: GetOutputUrl, then a GET of the URL',
          case: sizeName(large),
          subject: { name: 'presigned URL (node:http GET)', figures: [figure('', mbps(presigned), 'MB/s')] },
          floors: [{ name: 'raw S3 GetObject', figures: [figure('', mbps(raw), 'MB/s')] }],
          ratio: presignedRatio,
        });
        checks.push({
          target: `Presigned GET of ${sizeName(large)} ≥ 0.9× raw GetObject`,
          actual: `${presignedRatio.toFixed(2)}×`,
          met: presignedRatio >= 0.9,
        });

        const small = randomBytes(MiB);
        const smallId = await runningEvaluation(clients.command, 2);
        await unary(
          clients.command,
          clients.command.completeEvaluation,
          completeRequest(smallId, small),
          SETUP_DEADLINE_MS,
        );
        const ranged: number[] = [];
        const whole: number[] = [];
        const reads = smoke ? 5 : 30;
        for (let i = 0; i < reads; i += 1) {
          const offset = Math.floor(large / 2) + i * 4096;
          let got = { sha: '', bytes: 0 };
          ranged.push(await seconds(async () => (got = await readOutputHashed(clients.query, largeId, offset, MiB))));
          if (got.sha !== sha256(body.subarray(offset, offset + MiB))) throw new Error('the range read other bytes');
          whole.push(await seconds(async () => (got = await readOutputHashed(clients.query, smallId))));
          if (got.sha !== sha256(small)) throw new Error('the 1 MiB read other bytes');
        }
        const rangeRatio = median(ranged) / median(whole);
        rows.push({
          scenario: 'bytes: ReadOutput of 1 MiB',
          case: `a range of ${sizeName(large)}`,
          subject: { name: 'range', figures: [figure('p50', median(ranged) * 1000, 'ms')] },
          floors: [{ name: 'a whole 1 MiB output', figures: [figure('p50', median(whole) * 1000, 'ms')] }],
          ratio: rangeRatio,
        });
        checks.push({
          target: `ReadOutput of a 1 MiB range of ${sizeName(large)} ≤ 2× reading a 1 MiB output (median of ${reads})`,
          actual: `${rangeRatio.toFixed(2)}×`,
          met: rangeRatio <= 2,
        });

        // --- Direct multipart upload beside the SDK's multipart upload ---------------------------
        const direct: number[] = [];
        const directPut: number[] = [];
        const rawUpload: number[] = [];
        for (let round = 0; round < rounds; round += 1) {
          ctx.progress(`bytes: direct upload and raw multipart of ${sizeName(large)}, round ${round + 1}/${rounds}`);
          const evalId = await runningEvaluation(clients.command, 100 + round);
          const timed = await directUpload(clients, evalId, body);
          direct.push(timed.put + timed.complete);
          directPut.push(timed.put);
          rawUpload.push(await seconds(() => rawMultipart(s3, bucket, `bench-floor/multipart/${round}`, body)));
        }
        const uploadRatio = mbps(direct) / mbps(rawUpload);
        rows.push({
          scenario: 'bytes: direct upload (CreateOutputUpload, PUT parts, CompleteEvaluation)',
          case: `${sizeName(large)}, ${PARTS_IN_FLIGHT} parts of ${sizeName(PART_BYTES)} at once`,
          subject: {
            name: 'direct upload, completed and verified',
            figures: [figure('', mbps(direct), 'MB/s'), figure('parts alone', mbps(directPut), 'MB/s')],
          },
          floors: [{ name: 'raw SDK multipart upload', figures: [figure('', mbps(rawUpload), 'MB/s')] }],
          ratio: uploadRatio,
        });
        checks.push({
          target: `Direct multipart upload of ${sizeName(large)} ≥ 0.9× raw multipart (completion and verification included)`,
          actual: `${uploadRatio.toFixed(2)}× (the parts alone ${(mbps(directPut) / mbps(rawUpload)).toFixed(2)}×)`,
          met: uploadRatio >= 0.9,
        });
        notes.push(
          'Direct upload: the completion reads the object back once to check its size and SHA-256 against what CreateOutputUpload was promised; "parts alone" is the PUTs of the parts to their presigned URLs, the part of the upload that a raw multipart upload does too.',
        );

        // --- Compression (lz4 TOAST of bodies kept in PostgreSQL) ---------------------------------
        const sample = 400 * 1024;
        const pg = new Client({ connectionString: stack.environment.config.databaseUrl });
        await pg.connect();
        try {
          for (const [name, content] of [
            ['text', textOutput(sample)],
            ['random bytes', randomBytes(sample)],
          ] as const) {
            const ids: string[] = [];
            for (let i = 0; i < 10; i += 1)
              ids.push(await runningEvaluation(clients.command, 500 + i + (name === 'text' ? 0 : 100)));
            const cpu = measureCpu([{ name: 'postgres', comm: 'postgres' }]);
            for (const evalId of ids) {
              await unary(
                clients.command,
                clients.command.completeEvaluation,
                completeRequest(evalId, content),
                SETUP_DEADLINE_MS,
              );
            }
            const spent = cpuMs(cpu.stop(), 'postgres');
            const { rows: sizes } = await pg.query<{ stored: string; method: string | null }>(
              `SELECT sum(pg_column_size(content))::text AS stored, max(pg_column_compression(content)) AS method
                 FROM evaluation_bodies WHERE eval_id = ANY ($1) AND kind = 'output'`,
              [ids],
            );
            const ratio = (ids.length * sample) / Number(sizes[0]?.stored ?? 1);
            notes.push(
              `Compression, ${name} (${ids.length} outputs of ${sample / 1024} KiB kept in PostgreSQL): ${ratio.toFixed(2)}:1 (${sizes[0]?.method ?? 'not compressed'}); PostgreSQL CPU ${(spent / ((ids.length * sample) / MB)).toFixed(1)} ms per MB written (the whole command, not only the compression).`,
            );
          }
        } finally {
          await pg.end();
        }

        // --- A 6 GiB streamed output, made on the fly (full runs) ----------------------------------
        if (!smoke) {
          const size = 6 * GiB;
          const block = randomBytes(MiB);
          const chunkAt = (at: number, length: number): Buffer => {
            const chunk = Buffer.from(block.subarray(0, length));
            chunk.writeDoubleLE(at, 0); // every MiB differs
            return chunk;
          };
          const expected = createHash('sha256');
          for (let at = 0; at < size; at += MiB) expected.update(chunkAt(at, Math.min(MiB, size - at)));
          const evalId = await runningEvaluation(clients.command, 9000, 3600);
          ctx.progress('bytes: a 6 GiB output, streamed in and read back');
          const commandMemory = watchPeakMemory(command.pid);
          const write = await seconds(() => completeStreamed(clients.command, evalId, size, chunkAt));
          const commandGrowth = commandMemory.stop().growthMiB;
          const queryMemory = watchPeakMemory(query.pid);
          let got = { sha: '', bytes: 0 };
          const read = await seconds(async () => (got = await readOutputHashed(clients.query, evalId)));
          const queryGrowth = queryMemory.stop().growthMiB;
          if (got.sha !== expected.digest('hex')) throw new Error('the 6 GiB output read back differs');
          rows.push({
            scenario: 'bytes: CompleteEvaluationStream, then ReadOutput',
            case: '6 GiB, made as it is sent',
            subject: {
              name: 'write',
              figures: [figure('', size / MB / write, 'MB/s'), figure('command peak RSS growth', commandGrowth, 'MiB')],
            },
            floors: [
              {
                name: 'read',
                figures: [figure('', size / MB / read, 'MB/s'), figure('query peak RSS growth', queryGrowth, 'MiB')],
              },
            ],
          });
        } else {
          notes.push('The 6 GiB streamed output runs in full runs only (make bench).');
        }
      } finally {
        closeClients();
      }
      return { rows, checks, notes };
    } finally {
      s3.destroy();
      await stack.close();
    }
  },
};
