import type { EvaluationSnapshot } from '../domain';

/**
 * The state this instance last read or wrote of recent evaluations, by tenant and id, at most
 * `capacity` of them (least recently used out first; 0 keeps none). A command on one of them is
 * first decided against it without a load: a start or a completion right after the submit is
 * then one round trip, not two.
 *
 * Never the truth, only a guess: the write itself checks the revision it was decided at (and
 * the request id's uniqueness), so a state another instance has moved since makes the write a
 * conflict, and the command is decided again against a load (decide-and-append.ts). Anything
 * but a write decided against a guess is decided again against a load as well.
 */
export interface RecentStates {
  get(tenant: string, evalId: string): EvaluationSnapshot | undefined;
  /**
   * Keeps `state` as the latest of `evalId`; undefined (none there, or the write could not tell)
   * forgets it, and so does an archived state (it takes no commands).
   */
  remember(tenant: string, evalId: string, state: EvaluationSnapshot | undefined): void;
  /**
   * The state `get` gave did not decide the command: the write conflicted (another instance
   * moved the evaluation), or the decision was a refusal or a repeat, which only a load can
   * confirm. Forgets it and counts it.
   */
  reloaded(tenant: string, evalId: string): void;
  /** Since start: `get`s that found a state, that found none, and found states that needed a load after all. */
  readonly counts: GuessCounts;
}

export interface GuessCounts {
  readonly hits: number;
  readonly misses: number;
  readonly reloaded: number;
}

export function createRecentStates(capacity: number): RecentStates {
  // A Map iterates in insertion order: deleting and setting again moves an entry to the end,
  // so the first entry is always the least recently used.
  const states = new Map<string, EvaluationSnapshot>();
  const keyOf = (tenant: string, evalId: string): string => `${tenant}/${evalId}`;
  const counts = { hits: 0, misses: 0, reloaded: 0 };
  return {
    counts,
    get(tenant, evalId) {
      const key = keyOf(tenant, evalId);
      const state = states.get(key);
      if (state === undefined) {
        counts.misses += 1;
        return undefined;
      }
      counts.hits += 1;
      states.delete(key);
      states.set(key, state);
      return state;
    },
    remember(tenant, evalId, state) {
      const key = keyOf(tenant, evalId);
      states.delete(key);
      if (capacity === 0 || state === undefined || state.archivedAt !== undefined) return;
      states.set(key, state);
      if (states.size > capacity) states.delete(states.keys().next().value as string);
    },
    reloaded(tenant, evalId) {
      counts.reloaded += 1;
      states.delete(keyOf(tenant, evalId));
    },
  };
}
