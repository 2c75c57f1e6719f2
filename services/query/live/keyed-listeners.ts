/**
 * Listeners registered by key (an evaluation id): the hub's changes of one evaluation and the
 * log hints both reach only the listeners of their key. A key's set goes when its last listener
 * does, so that the evaluations followed once cost nothing afterwards.
 */
export interface KeyedListeners<L> {
  /** Registers `listener` under `key`. Returns the unsubscribe function (idempotent). */
  add(key: string, listener: L): () => void;
  /** The listeners of `key`, as a copy: one may unsubscribe while they are called. */
  of(key: string): readonly L[];
  /** Listeners registered under every key. */
  readonly size: number;
}

/** What a key without listeners has: one array for all, so that most dispatches allocate nothing. */
const NONE: readonly never[] = Object.freeze([]);

export function createKeyedListeners<L>(): KeyedListeners<L> {
  const byKey = new Map<string, Set<L>>();
  return {
    add(key, listener) {
      let set = byKey.get(key);
      if (set === undefined) byKey.set(key, (set = new Set()));
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0 && byKey.get(key) === set) byKey.delete(key);
      };
    },
    of(key) {
      const set = byKey.get(key);
      return set === undefined ? NONE : [...set];
    },
    get size() {
      let n = 0;
      for (const set of byKey.values()) n += set.size;
      return n;
    },
  };
}
