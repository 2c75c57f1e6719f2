/**
 * What the live buffers of the open watch streams hold, for the metrics: each stream holds at
 * most STREAM_BUFFER_LIMIT changes for its client (live/resumable-stream.ts) and drops them
 * (re-reading from Redis instead) when the client is slower than that.
 */
export interface StreamBuffers {
  /** Counts `stream` among the open ones until the returned function is called. */
  track(stream: { readonly buffered: number }): () => void;
  /** Changes held now by every open stream's buffer (summed when asked: a scrape). */
  buffered(): number;
  /** Streams whose client fell behind their buffer so far. */
  readonly fallbacks: number;
  /** A stream dropped its buffer for a slow client. */
  fellBack(): void;
}

export function createStreamBuffers(): StreamBuffers {
  const open = new Set<{ readonly buffered: number }>();
  let fallbacks = 0;
  return {
    track(stream) {
      open.add(stream);
      return () => open.delete(stream);
    },
    buffered() {
      let held = 0;
      for (const stream of open) held += stream.buffered;
      return held;
    },
    get fallbacks() {
      return fallbacks;
    },
    fellBack() {
      fallbacks += 1;
    },
  };
}
