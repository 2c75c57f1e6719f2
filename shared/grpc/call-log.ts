import type { UnavailableError } from '../errors';
import type { Logger } from '../logging';

/**
 * Where a server's calls report what went wrong: the logger, and refusals (UNAVAILABLE: a
 * dependency down, an overloaded service), which come in floods — every call of an outage, every
 * command past the pending limit — and are therefore counted and logged at most once per
 * interval per method and reason, without a stack: the line says how many were refused since.
 */
export interface CallLog {
  readonly logger: Logger;
  refused(method: string, err: UnavailableError): void;
  /** Refusals so far, per method. */
  readonly refusals: ReadonlyMap<string, number>;
}

export function createCallLog(
  logger: Logger,
  options: { readonly intervalMs?: number; readonly clock?: () => number } = {},
): CallLog {
  const intervalMs = options.intervalMs ?? 10_000;
  const clock = options.clock ?? Date.now;
  const refusals = new Map<string, number>();
  // Per method and reason: when its last line was written, and refusals since.
  const lines = new Map<string, { at: number; unlogged: number }>();
  return {
    logger,
    refusals,
    refused(method, err) {
      refusals.set(method, (refusals.get(method) ?? 0) + 1);
      const key = `${method}\u0000${err.message}`;
      const line = lines.get(key);
      const now = clock();
      if (line !== undefined && now - line.at < intervalMs) {
        line.unlogged += 1;
        return;
      }
      const cause = err.cause instanceof Error ? err.cause.message : undefined;
      logger.warn('refused: dependency unavailable', {
        method,
        reason: err.message,
        ...(cause !== undefined ? { cause } : {}),
        refusedSinceLastLine: line?.unlogged ?? 0,
      });
      if (lines.size > 1000) lines.clear(); // reasons carry ids at times: keep the map small
      lines.set(key, { at: now, unlogged: 0 });
    },
  };
}
