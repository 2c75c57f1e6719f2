import { createHash } from 'node:crypto';
import type { Limits } from '../../../shared/config';
import { NotFoundError, UnavailableError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import {
  commandHash,
  decideChange,
  decideSubmit,
  memoizeDigest,
  planBody,
  UploadedOutput,
  type BodyPlan,
  type Command,
  type CommandResult,
  type CompletionHeader,
  type Decision,
  type Digest,
} from '../domain';
import type {
  AppendRequest,
  BlobStore,
  Clock,
  EvaluationStore,
  EventPublisher,
  IdGenerator,
  StoredBody,
} from './ports';

export interface CommandExecutorDeps {
  readonly store: EvaluationStore;
  readonly blobs: BlobStore;
  readonly publisher: EventPublisher;
  readonly clock: Clock;
  readonly newId: IdGenerator;
  readonly limits: Limits;
  /**
   * Commands in progress at once (waiting for PostgreSQL included) before more are refused at
   * once with UNAVAILABLE: under overload, a caller hears it in microseconds, not when a pool
   * wait times out seconds later, and the accepted commands keep their latency.
   */
  readonly maxPending: number;
  readonly logger: Logger;
}

export interface CommandExecutor {
  /** Runs a validated command: load → decide → (upload) → write → publish. */
  execute(command: Command): Promise<CommandResult>;
  /**
   * CompleteEvaluation whose output arrives as `output`, exactly `header.outputSize` bytes (the
   * caller checks the count and throws otherwise). Above the inline limit the bytes go to S3 as
   * they arrive, under a key of their own; the command is then decided as `execute` does, and
   * the object deleted if the command does not keep it.
   */
  completeStreamed(header: CompletionHeader, output: AsyncIterable<Buffer>): Promise<CommandResult>;
}

// Each round lost to a concurrent writer re-reads and decides again; losing this many times
// in a row means a hot loop of writers on one evaluation, which no retry here would fix.
const MAX_ROUNDS = 8;

type Loaded = Awaited<ReturnType<EvaluationStore['load']>>;

function planOf(command: Command, limits: Limits, digest: Digest): BodyPlan | undefined {
  if (command.type === 'CompleteEvaluation') return planBody(command.evalId, 'output', command.output, limits, digest);
  if (command.type === 'FailEvaluation') {
    return planBody(command.evalId, 'error', Buffer.from(command.error, 'utf8'), limits, digest);
  }
  return undefined;
}

function storedBody(command: Command, plan: BodyPlan | undefined): StoredBody | undefined {
  if (plan === undefined || plan.storage === 'none') return undefined;
  const kind = command.type === 'FailEvaluation' ? 'error' : 'output';
  const size = plan.ref.size;
  return plan.storage === 'postgres' ? { kind, size, content: plan.content } : { kind, size, s3Key: plan.key };
}

export function createCommandExecutor(deps: CommandExecutorDeps): CommandExecutor {
  const { store, blobs, publisher, clock, limits, logger } = deps;

  function decide(
    command: Command,
    evalId: string,
    hash: string,
    plan: BodyPlan | undefined,
    now: Date,
    { snapshot, priorRequest }: Loaded,
  ): Decision {
    const ctx = { now, commandHash: hash, ...(plan !== undefined ? { body: plan.ref } : {}) };
    return command.type === 'SubmitEvaluation'
      ? decideSubmit(command, evalId, snapshot, priorRequest, ctx)
      : decideChange(command, snapshot, priorRequest, ctx);
  }

  let pending = 0;

  /**
   * Runs `work` as a command in progress, or refuses it at once when there are too many
   * (running `beforeRefusal` first).
   */
  async function admitted<T>(work: () => Promise<T>, beforeRefusal?: () => Promise<void>): Promise<T> {
    if (pending >= deps.maxPending) {
      await beforeRefusal?.();
      throw new UnavailableError(
        `command service overloaded: ${pending} commands in progress (MAX_PENDING_COMMANDS); retry with backoff`,
      );
    }
    pending += 1;
    try {
      return await work();
    } finally {
      pending -= 1;
    }
  }

  return {
    execute: (command) => admitted(() => run(command)),
    async completeStreamed(header, chunks) {
      // While its bytes arrive a streamed completion is not a command in progress: a slow
      // uploader must not make the service refuse other executors' commands. Its command is.
      let output: Buffer | UploadedOutput;
      if (header.outputSize <= limits.inlineOutputMaxBytes) output = await collect(chunks);
      else {
        // Before taking in up to a GiB: an evaluation that does not exist cannot complete.
        if ((await store.load(header.evalId, undefined)).snapshot === undefined) {
          throw new NotFoundError(`evaluation ${header.evalId} not found`);
        }
        output = await upload(header, chunks);
      }
      const command: Command = {
        type: 'CompleteEvaluation',
        evalId: header.evalId,
        exitCode: header.exitCode,
        output,
        ...header.options,
      };
      const uploaded = output instanceof UploadedOutput ? output : undefined;
      return admitted(() => run(command), uploaded && (() => discardUpload(uploaded)));
    },
  };

  /** Deletes an uploaded output no record refers to; a failure leaves an orphan, logged. */
  async function discardUpload(uploaded: UploadedOutput): Promise<void> {
    await blobs.delete(uploaded.key).catch((err: unknown) => {
      logger.warn('could not delete an unused upload', { key: uploaded.key, err });
    });
  }

  async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const chunk of chunks) parts.push(chunk);
    return Buffer.concat(parts);
  }

  /** Streams an output to S3, hashing it and keeping its head on the way. */
  async function upload(header: CompletionHeader, chunks: AsyncIterable<Buffer>): Promise<UploadedOutput> {
    // Not derived from the content, which is known only at the end: a key of its own per upload.
    const key = `evaluations/${header.evalId}/output/streamed-${deps.newId()}`;
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
    await blobs.putStream(key, header.outputSize, observed());
    return new UploadedOutput(key, header.outputSize, hash.digest('hex'), Buffer.concat(head));
  }

  /**
   * Runs the command; an output uploaded before it (a streamed completion) that it turns out
   * not to keep (refused, or a repeat answered as before) is deleted. Not after a failed
   * write: the write may have committed unseen, and then the object is referred to.
   */
  async function run(command: Command): Promise<CommandResult> {
    const uploaded =
      command.type === 'CompleteEvaluation' && command.output instanceof UploadedOutput ? command.output : undefined;
    if (uploaded === undefined) return decideAndWrite(command);
    const write = { maybeWritten: false };
    try {
      return await decideAndWrite(command, write);
    } finally {
      // Awaited, so that when the caller hears the answer the object is gone.
      if (!write.maybeWritten) await discardUpload(uploaded);
    }
  }

  /**
   * load → decide → (upload) → write → publish, again after a conflict. `write.maybeWritten` is
   * true from the moment a write is sent until it is known to have written nothing.
   */
  async function decideAndWrite(
    command: Command,
    write: { maybeWritten: boolean } = { maybeWritten: false },
  ): Promise<CommandResult> {
    // A submit without an id gets one fresh id, so that every round retries the same id.
    const evalId = command.type === 'SubmitEvaluation' ? (command.evalId ?? deps.newId()) : command.evalId;
    // The first load goes out before the hashing below (tens of ms for a 16 MiB output), so
    // PostgreSQL answers while this process hashes. Rejections are awaited in round 1.
    let firstLoad: Promise<Loaded> | undefined = store.load(evalId, command.requestId);
    firstLoad.catch(() => undefined);
    // One SHA-256 of a large body serves the command hash, the S3 key and the upload's signature.
    const digest = memoizeDigest();
    const hash = commandHash(command, digest);
    const plan = planOf(command, limits, digest);
    const body = storedBody(command, plan);
    let uploaded = false;
    for (let round = 1; round <= MAX_ROUNDS; round += 1) {
      const now = clock.now();
      const loaded = await (firstLoad ?? store.load(evalId, command.requestId));
      firstLoad = undefined;
      const decision = decide(command, evalId, hash, plan, now, loaded);
      if (decision.kind === 'unchanged') return decision.result;
      if (plan?.storage === 's3' && !uploaded) {
        // Uploaded before the transaction: if the write then fails, an unreferenced object is
        // left (same key on retry), never a reference to a missing object.
        await blobs.put(plan.key, plan.content, plan.digest);
        uploaded = true;
      }
      const request: AppendRequest = {
        decision,
        commandHash: hash,
        recordedAt: now,
        ...(command.type === 'SubmitEvaluation' ? { code: command.code } : {}),
        ...(command.requestId !== undefined ? { requestId: command.requestId } : {}),
        ...(body !== undefined ? { body } : {}),
      };
      write.maybeWritten = true;
      const outcome = await store.append(request);
      if (outcome.kind === 'appended') {
        publisher.publish(outcome.event).catch((err: unknown) => {
          // Durable in PostgreSQL already; the query side catches up from the log.
          logger.warn('publish failed; the query side will catch up from the event log', {
            position: outcome.event.position,
            err,
          });
        });
        return { evalId: decision.evalId, revision: decision.toRevision, position: outcome.event.position };
      }
      write.maybeWritten = false; // a conflict wrote nothing
      logger.debug('write conflict; deciding again', { evalId, round });
    }
    throw new Error(`gave up on ${command.type} for ${evalId} after ${MAX_ROUNDS} conflicting rounds`);
  }
}
