import type { IdentityLimits } from '../config';

/** Buckets kept at most; past it, the full ones (identities at rest) are forgotten. */
const MAX_TRACKED_IDENTITIES = 10_000;

export interface IdentityLimiter {
  /** Takes one call from `subject`'s bucket: undefined when it may go on, else the ms until it may. */
  takeCall(subject: string): number | undefined;
  /** Opens a stream for `subject`: its release, or undefined when it holds its most already. */
  openStream(subject: string): (() => void) | undefined;
}

/**
 * Per identity: a token bucket of calls (`requestsPerSecond`, `burst` deep) and a count of open
 * streams. A limit of 0 is no limit.
 */
export function createIdentityLimiter(limits: IdentityLimits, now: () => number = Date.now): IdentityLimiter {
  const buckets = new Map<string, { tokens: number; at: number }>();
  const streams = new Map<string, number>();
  const ratePerMs = limits.requestsPerSecond / 1000;

  function forgetRestedBuckets(at: number): void {
    for (const [subject, bucket] of buckets) {
      if (bucket.tokens + (at - bucket.at) * ratePerMs >= limits.burst) buckets.delete(subject);
    }
  }

  return {
    takeCall(subject) {
      if (limits.requestsPerSecond === 0) return undefined;
      const at = now();
      let bucket = buckets.get(subject);
      if (bucket === undefined) {
        if (buckets.size >= MAX_TRACKED_IDENTITIES) forgetRestedBuckets(at);
        bucket = { tokens: limits.burst, at };
        buckets.set(subject, bucket);
      }
      bucket.tokens = Math.min(limits.burst, bucket.tokens + (at - bucket.at) * ratePerMs);
      bucket.at = at;
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return undefined;
      }
      return Math.ceil((1 - bucket.tokens) / ratePerMs);
    },
    openStream(subject) {
      if (limits.maxStreams === 0) return () => undefined;
      const open = streams.get(subject) ?? 0;
      if (open >= limits.maxStreams) return undefined;
      streams.set(subject, open + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (streams.get(subject) ?? 1) - 1;
        if (left === 0) streams.delete(subject);
        else streams.set(subject, left);
      };
    },
  };
}
