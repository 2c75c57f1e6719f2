/** One member's outcome in a batch: its own value or its own error, never a neighbour's. */
export type Settled<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/**
 * Writes a batch, in order, and tells how each member ended through `settle` (by its index in
 * the batch) as soon as that is known: a member refused early hears it at once, not after its
 * neighbours are retried. It throws only when the rest of the batch failed alike (every member
 * not yet settled then fails with that error).
 */
export type BatchWriter<Req, Out> = (
  batch: readonly Req[],
  settle: (index: number, outcome: Settled<Out>) => void,
) => Promise<void>;

export interface GroupCommitOptions<Req> {
  /** Most members in one batch. */
  readonly maxBatch: number;
  /** Most bytes (as `sizeOf` counts them) in one batch; a single larger member goes alone. */
  readonly maxBatchBytes: number;
  readonly sizeOf: (request: Req) => number;
  /** Told of each batch as it is written (its size): what the tests and the bench observe. */
  readonly onBatch?: (size: number) => void;
}

interface Waiting<Req, Out> {
  readonly request: Req;
  resolve(value: Out): void;
  reject(err: unknown): void;
}

/**
 * Group commit: one batch in flight at a time; whatever arrives meanwhile waits and is written
 * together as the next batch, as soon as the one in flight ends. A lone request goes at once
 * (the write starts on the microtask after it arrives: requests of the same tick share it), so
 * nothing waits for company, and under load batches grow by themselves to what arrives during
 * one write. Each member settles with its own outcome.
 */
export function createGroupCommit<Req, Out>(
  write: BatchWriter<Req, Out>,
  options: GroupCommitOptions<Req>,
): (request: Req) => Promise<Out> {
  const queue: Waiting<Req, Out>[] = [];
  let writing = false;
  let scheduled = false;

  function schedule(): void {
    if (writing || scheduled || queue.length === 0) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      void writeNext();
    });
  }

  function takeBatch(): Waiting<Req, Out>[] {
    let bytes = 0;
    let count = 0;
    for (const waiting of queue) {
      const size = options.sizeOf(waiting.request);
      if (count > 0 && (count >= options.maxBatch || bytes + size > options.maxBatchBytes)) break;
      bytes += size;
      count += 1;
    }
    return queue.splice(0, count);
  }

  async function writeNext(): Promise<void> {
    if (writing || queue.length === 0) return;
    writing = true;
    let batch: Waiting<Req, Out>[] = [];
    const open = new Set<number>();
    const settle = (i: number, outcome: Settled<Out>): void => {
      if (!open.delete(i)) return;
      if (outcome.ok) batch[i]!.resolve(outcome.value);
      else batch[i]!.reject(outcome.error);
    };
    try {
      batch = takeBatch();
      for (const i of batch.keys()) open.add(i);
      options.onBatch?.(batch.length);
      await write(
        batch.map((w) => w.request),
        settle,
      );
      for (const i of open)
        settle(i, { ok: false, error: new Error(`the batch writer gave no outcome for member ${i}`) });
    } catch (err) {
      // A sizeOf that throws before a batch is taken fails the first waiting request: the queue
      // must move on rather than try the same batch again and again.
      if (batch.length === 0) queue.shift()?.reject(err);
      for (const i of open) settle(i, { ok: false, error: err });
    } finally {
      writing = false;
      schedule();
    }
  }

  return (request) =>
    new Promise<Out>((resolve, reject) => {
      queue.push({ request, resolve, reject });
      schedule();
    });
}
