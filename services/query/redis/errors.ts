import { CrucibleError, UnavailableError } from '../../../shared/errors';

const UNAVAILABLE_MESSAGES =
  /Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN/;

/** Whether an ioredis error means "Redis cannot be reached right now" (callers retry). */
function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return err.name === 'MaxRetriesPerRequestError' || UNAVAILABLE_MESSAGES.test(err.message);
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
