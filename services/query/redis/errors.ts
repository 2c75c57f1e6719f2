import { CrucibleError, UnavailableError } from '../../../shared/errors';

const UNAVAILABLE_MESSAGES =
  /Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN/;

/** Whether an ioredis error means "Redis cannot be reached right now" (callers retry). */
function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return err.name === 'MaxRetriesPerRequestError' || UNAVAILABLE_MESSAGES.test(err.message);
}

/**
 * Redis answers but takes no writes: out of memory (`maxmemory` reached, noeviction), a read-only
 * replica, or a failed snapshot that stops writes. The read models cannot move until it does;
 * the reason is what an operator must act on.
 */
export function redisRefusesWrites(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  // Out of memory, Redis refuses even reads queued in a MULTI (the queue takes memory): EXEC
  // then fails as EXECABORT, ioredis keeping the queued commands' errors beside it.
  const previous = (err as { previousErrors?: unknown }).previousErrors;
  if (err.message.startsWith('EXECABORT') && Array.isArray(previous)) {
    for (const cause of previous) {
      const reason = redisRefusesWrites(cause);
      if (reason !== undefined) return reason;
    }
  }
  if (err.message.startsWith('OOM '))
    return 'Redis is out of memory (maxmemory reached): free memory or raise maxmemory';
  if (err.message.startsWith('READONLY ')) return 'Redis is a read-only replica: point REDIS_URL at the primary';
  if (err.message.startsWith('MISCONF ')) return 'Redis refuses writes after a failed snapshot (MISCONF): see its log';
  return undefined;
}

/** Maps a Redis outage to UnavailableError; anything else passes through unchanged. */
function redisOutageToUnavailable(err: unknown, what: string): unknown {
  if (err instanceof CrucibleError || !isRedisUnavailable(err)) return err;
  return new UnavailableError(`the read models (Redis) are unavailable (${what}); retry`, { cause: err });
}

/**
 * The adapter with every method's Redis outage turned into UnavailableError where it happens,
 * so that every caller (a handler, the projection) hears UNAVAILABLE: retry.
 */
export function mappingOutages<T extends object>(what: string, adapter: T): T {
  const mapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(adapter)) {
    mapped[name] =
      typeof method === 'function'
        ? async (...args: unknown[]): Promise<unknown> => {
            try {
              return await (method as (...a: unknown[]) => Promise<unknown>).apply(adapter, args);
            } catch (err) {
              throw redisOutageToUnavailable(err, what);
            }
          }
        : method;
  }
  return mapped as T;
}

/**
 * The replies of a MULTI or a pipeline (ioredis' `exec()`), each checked: a command that failed
 * fails the whole read, with its own error.
 */
export function checkedReplies(results: [Error | null, unknown][] | null): unknown[] {
  if (results === null) throw new Error('a MULTI was aborted (a watched key changed)');
  return results.map(([err, value]) => {
    if (err !== null) throw err;
    return value;
  });
}
