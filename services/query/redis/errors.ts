import { CrucibleError, UnavailableError } from '../../../shared/errors';

const UNAVAILABLE_MESSAGES =
  /Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN/;

/** Whether an ioredis error means "Redis cannot be reached right now" (callers retry). */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return err.name === 'MaxRetriesPerRequestError' || UNAVAILABLE_MESSAGES.test(err.message);
}

/** Maps a Redis outage to UnavailableError; anything else passes through unchanged. */
export function redisOutageToUnavailable(err: unknown): unknown {
  if (err instanceof CrucibleError || !isRedisUnavailable(err)) return err;
  return new UnavailableError('the read models (Redis) are unavailable; retry', { cause: err });
}
