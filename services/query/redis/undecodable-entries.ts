import type { Logger } from '../../../shared/logging';

/** Where an entry that was skipped lives: its key, and its position or revision when known. */
export interface SkippedEntry {
  readonly key: string;
  readonly position?: bigint;
  readonly revision?: bigint;
  readonly reason: string;
}

/**
 * Entries of the read models that no client could decode, skipped by the readers. A skip is
 * counted and logged, at most one line per interval: every resuming watcher meets the same
 * entry again, and a line each would flood the log.
 */
export interface UndecodableEntries {
  report(entry: SkippedEntry): void;
  /** Entries skipped since this was created. */
  readonly skipped: number;
}

export interface UndecodableEntriesOptions {
  readonly intervalMs?: number;
  readonly clock?: () => number;
}

export function createUndecodableEntries(logger: Logger, options: UndecodableEntriesOptions = {}): UndecodableEntries {
  const intervalMs = options.intervalMs ?? 10_000;
  const clock = options.clock ?? Date.now;
  let skipped = 0;
  let unlogged = 0;
  let lastLine: number | undefined;
  return {
    report(entry) {
      skipped += 1;
      const now = clock();
      if (lastLine !== undefined && now - lastLine < intervalMs) {
        unlogged += 1;
        return;
      }
      lastLine = now;
      logger.warn('skipped an undecodable read-model entry', {
        key: entry.key,
        ...(entry.position !== undefined ? { position: entry.position.toString() } : {}),
        ...(entry.revision !== undefined ? { revision: entry.revision.toString() } : {}),
        reason: entry.reason,
        skipped,
        // Skips since the last line that had no line of their own.
        unlogged,
      });
      unlogged = 0;
    },
    get skipped() {
      return skipped;
    },
  };
}
