import { NotFoundError } from '../../../shared/errors';
import type { Logger } from '../../../shared/logging';
import { logGap, type Command, type CommandResult, type LogsTarget } from '../domain';
import type { EvaluationStore } from './ports';

/** Some bytes of a log at their offset, as an AppendLogs call sends them. */
export interface LogChunkIn {
  readonly offset: number;
  readonly data: Buffer;
}

/** What an AppendLogs call stored: the log's size after it, and the revision its last segment made. */
export interface LogsAppended {
  readonly size: number;
  readonly result: CommandResult;
}

export interface LogAppenderDeps {
  readonly store: Pick<EvaluationStore, 'load'>;
  /** Runs one segment as a command (admission, rounds, upload, publication). */
  readonly execute: (command: Command) => Promise<CommandResult>;
  readonly limits: { readonly logFlushMs: number; readonly logSegmentMaxBytes: number };
  readonly logger: Logger;
}

/**
 * One AppendLogs call: takes its chunks in order and stores them as segments of the log, each a
 * command (AppendLogSegment) of its own, when LOG_FLUSH_MS has passed since the first byte
 * waiting, when LOG_SEGMENT_MAX_BYTES wait, and at the call's end; the answer comes after the
 * last segment is stored. The log's stored size is read once at the start: a chunk (or its
 * part) below it, or below what the call already took, is acknowledged and dropped; a chunk past
 * it is a gap, refused after what came before it is stored. A writer holds at most about twice
 * LOG_SEGMENT_MAX_BYTES: the chunks wait while a full segment is being written.
 */
export async function appendLogs(
  deps: LogAppenderDeps,
  target: LogsTarget,
  chunks: AsyncIterable<LogChunkIn>,
  tenant: string,
): Promise<LogsAppended> {
  const { evalId, stream } = target;
  const { snapshot } = await deps.store.load(evalId, undefined, tenant);
  if (snapshot === undefined) throw new NotFoundError(`evaluation ${evalId} not found`);

  let stored = snapshot.logBytes[stream];
  let result: CommandResult = { evalId, revision: snapshot.revision, position: snapshot.latest.position };
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let writingBytes = 0;
  let writes: Promise<void> = Promise.resolve();
  let failure: Error | undefined;
  let timer: NodeJS.Timeout | undefined;

  /** Where the next chunk must start: after what is stored, being stored and waiting. */
  const end = (): number => stored + writingBytes + pendingBytes;

  /** Queues what waits as the next segment (writes run one at a time, in order). */
  const flush = (): Promise<void> => {
    clearTimeout(timer);
    timer = undefined;
    if (pendingBytes === 0) return writes;
    const data = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
    const offset = stored + writingBytes;
    pending = [];
    pendingBytes = 0;
    writingBytes += data.length;
    writes = writes.then(async () => {
      try {
        if (failure !== undefined) return;
        result = await deps.execute({ type: 'AppendLogSegment', evalId, stream, offset, data });
        stored = offset + data.length;
      } catch (err) {
        failure ??= err instanceof Error ? err : new Error(String(err));
      } finally {
        writingBytes -= data.length;
      }
    });
    return writes;
  };
  const failed = (): void => {
    if (failure !== undefined) throw failure;
  };

  try {
    for await (const { offset, data } of chunks) {
      failed();
      const next = end();
      if (offset > next) {
        await flush();
        failed();
        throw logGap(evalId, stream, next, offset);
      }
      if (offset + data.length <= next) continue; // stored (or taken) already: acknowledged
      pending.push(offset < next ? data.subarray(next - offset) : data);
      pendingBytes += offset + data.length - Math.max(offset, next);
      if (pendingBytes + writingBytes >= deps.limits.logSegmentMaxBytes) {
        await flush();
      } else {
        timer ??= setTimeout(() => void flush(), deps.limits.logFlushMs);
      }
    }
  } catch (err) {
    // The call broke (or was refused): what it delivered is stored all the same, so that a
    // writer that reconnects resumes from the stored size without sending it again.
    await flush().catch(() => undefined);
    if (failure !== undefined && failure !== err) {
      deps.logger.warn('a log segment of a broken AppendLogs call was not stored', { evalId, stream, err: failure });
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
  await flush();
  failed();
  return { size: stored, result };
}
