import { createHash } from 'node:crypto';
import { NotFoundError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import { UploadedOutput, type BodyLimits, type Command, type CompletionHeader } from '../domain';
import type { BlobStore, EvaluationStore, IdGenerator } from './ports';

export interface StreamedOutputDeps {
  readonly store: EvaluationStore;
  readonly blobs: BlobStore;
  readonly newId: IdGenerator;
  readonly limits: BodyLimits;
}

/**
 * Takes in a streamed completion's output: up to the inline limit it is collected in memory;
 * above it, once the evaluation is known to exist, it goes to S3 as it arrives.
 */
export async function receiveOutput(
  deps: StreamedOutputDeps,
  header: CompletionHeader,
  chunks: AsyncIterable<Buffer>,
  tenant: string,
): Promise<Buffer | UploadedOutput> {
  if (header.outputSize <= deps.limits.inlineOutputMaxBytes) return collectOutput(chunks);
  // Before taking in up to a GiB: an evaluation that does not exist cannot complete.
  if ((await deps.store.load(header.evalId, undefined, tenant)).snapshot === undefined) {
    throw new NotFoundError(`evaluation ${header.evalId} not found`);
  }
  return uploadOutput(deps, header, chunks);
}

/** The chunks, concatenated. */
async function collectOutput(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

/** Streams an output to S3 (or the fallback store), hashing it and keeping its head on the way. */
async function uploadOutput(
  { blobs, newId, limits }: Pick<StreamedOutputDeps, 'blobs' | 'newId' | 'limits'>,
  header: CompletionHeader,
  chunks: AsyncIterable<Buffer>,
): Promise<UploadedOutput> {
  // Not derived from the content, which is known only at the end: a key of its own per upload.
  const key = `evaluations/${header.evalId}/output/streamed-${newId()}`;
  const hash = createHash('sha256');
  const head: Buffer[] = [];
  let headBytes = 0;
  async function* observed(): AsyncGenerator<Buffer> {
    for await (const chunk of chunks) {
      hash.update(chunk);
      if (headBytes < limits.previewBytes) {
        const part = chunk.subarray(0, limits.previewBytes - headBytes);
        head.push(Buffer.from(part)); // a copy: the chunk's memory is not kept alive by the preview
        headBytes += part.length;
      }
      yield chunk;
    }
  }
  const home = await blobs.putStream(key, header.outputSize, observed());
  return new UploadedOutput(key, header.outputSize, hash.digest('hex'), Buffer.concat(head), home);
}

/** The CompleteEvaluation a streamed (or directly uploaded) completion stands for, once its output is in. */
export function completionOf(
  header: Pick<CompletionHeader, 'evalId' | 'exitCode' | 'options'>,
  output: Buffer | UploadedOutput,
): Command {
  return {
    type: 'CompleteEvaluation',
    evalId: header.evalId,
    exitCode: header.exitCode,
    output,
    ...header.options,
  };
}

/** The output a command carries that was uploaded for it before it was decided, if any (and its to delete). */
export function uploadedOutputOf(command: Command): UploadedOutput | undefined {
  return command.type === 'CompleteEvaluation' && command.output instanceof UploadedOutput && command.output.disposable
    ? command.output
    : undefined;
}

/** Deletes an uploaded output no record refers to; a failure leaves an orphan, logged. */
export async function discardUpload(
  { blobs, logger }: { readonly blobs: BlobStore; readonly logger: Logger },
  uploaded: UploadedOutput,
): Promise<void> {
  await blobs.delete(uploaded.key, uploaded.home).catch((err: unknown) => {
    logger.warn('could not delete an unused upload', { key: uploaded.key, err });
  });
}
