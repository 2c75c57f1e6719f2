import type { BlobStore as Store } from '../../../shared/blobs';
import { BlobNotFoundError } from '../../../shared/blobs';
import type { BodyKind, LogStream } from '../../../shared/domain';
import { UnavailableError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import { createPeriodic } from '../../../shared/runtime';
import type { Command, CommandResult } from '../domain';

/** A blob the fallback store holds and a row refers to (a body, or a log segment). */
export interface FallbackBlob {
  readonly evalId: string;
  /** The evaluation's tenant: the move is written in it. */
  readonly tenant: string;
  readonly kind: BodyKind | LogStream;
  /** A log segment's start offset. */
  readonly offset?: number;
  readonly key: string;
  readonly size: number;
}

/** The rows that name blobs still in the fallback store (postgres/fallback-blobs.ts). */
export interface FallbackBlobs {
  /** Up to `limit` of them, oldest evaluations first. */
  list(limit: number): Promise<FallbackBlob[]>;
  /**
   * Runs `move` holding a lock on the blob that every instance's mover takes (so that two never
   * move one blob), once the row is read again under it and still names the fallback store;
   * 'skipped' when another instance holds it or it has moved meanwhile.
   */
  claim(blob: FallbackBlob, move: () => Promise<void>): Promise<'moved' | 'skipped'>;
}

export interface BlobMoverDeps {
  readonly blobs: FallbackBlobs;
  /** Where blobs go: S3. */
  readonly primary: Store;
  /** Where they are: BLOB_FALLBACK_DIR. */
  readonly fallback: Store;
  /** Runs the move's command (EvaluationBlobMoved) in the evaluation's tenant. */
  readonly execute: (command: Command, call: { readonly tenant: string }) => Promise<CommandResult>;
  readonly intervalMs: number;
  readonly logger: Logger;
}

export interface BlobMover {
  /** One pass over what the fallback store holds: how many blobs it moved. */
  sweep(): Promise<number>;
  start(): void;
  /** Stops the timer and waits for a pass under way. */
  stop(): Promise<void>;
}

/** Blobs moved per pass; the next pass takes the rest. */
const PASS_SIZE = 100;

/**
 * Copies what the command service wrote to the fallback store while S3 was down back to S3, and
 * records each move as an event (EvaluationBlobMoved: the read models and watchers learn the new
 * location), then deletes the file. Killed at any point, nothing is lost: before the event
 * commits, the row still names the fallback store and the next pass copies the blob again (the
 * same key, the same bytes); after it, the file is a leftover, deleted by the next pass over
 * the fallback store's orphans. While S3 is still down a pass stops at the first failure.
 */
export function createBlobMover(deps: BlobMoverDeps): BlobMover {
  const { blobs, primary, fallback, logger } = deps;

  async function move(blob: FallbackBlob): Promise<void> {
    const download = await fallback.open(blob.key, new AbortController().signal);
    if (download === 'replaced') throw new Error(`fallback blob ${blob.key} changed while it was read`);
    await primary.putStream(
      blob.key,
      blob.size,
      (async function* () {
        for await (const part of download.bytes) yield Buffer.from(part.buffer, part.byteOffset, part.byteLength);
      })(),
    );
    await deps.execute(
      {
        type: 'MoveBlob',
        evalId: blob.evalId,
        kind: blob.kind,
        ...(blob.offset !== undefined ? { offset: blob.offset } : {}),
        key: blob.key,
        to: 's3',
      },
      { tenant: blob.tenant },
    );
  }

  async function sweep(): Promise<number> {
    let moved = 0;
    for (const blob of await blobs.list(PASS_SIZE)) {
      if (periodic.stopped) break;
      try {
        if ((await blobs.claim(blob, () => move(blob))) === 'moved') {
          moved += 1;
          await fallback.delete(blob.key).catch((err: unknown) => {
            logger.warn('a moved blob stays in the fallback store', { key: blob.key, err });
          });
        }
      } catch (err) {
        if (err instanceof UnavailableError) {
          logger.debug('blob mover: S3 or PostgreSQL is still unavailable', { err: err.message });
          break;
        }
        if (err instanceof BlobNotFoundError) {
          logger.error('a blob recorded in the fallback store is missing from it', {
            key: blob.key,
            evalId: blob.evalId,
          });
          continue;
        }
        logger.error('blob mover could not move a blob', { key: blob.key, err });
      }
    }
    if (moved > 0) logger.info('blobs moved from the fallback store to S3', { moved });
    return moved;
  }

  const periodic = createPeriodic(sweep, deps.intervalMs, (err) => logger.warn('blob mover pass failed', { err }));

  return { sweep, start: () => periodic.start(), stop: () => periodic.stop() };
}
