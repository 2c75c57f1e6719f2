import type { Tracing } from '../../../shared/tracing';

/** Changes heard of and not yet delivered, at most (a change caught up without a hint never is). */
const CAPACITY = 10_000;

/**
 * The query side's part of a command's trace (shared/tracing): a change announced with the
 * traceparent of the call that wrote it gets, on this replica, a `projection` span from the
 * announcement until the change reached the live tail (applied, in the change log), then a
 * `stream update` span for its delivery to the watchers. A change the replica only caught up
 * from the log was announced to nobody here: its trace ends at the command service.
 */
export interface ChangeTraces {
  heard(position: bigint, traceparent: string): void;
  delivered(position: bigint, startedAt: number, watchers: number): void;
}

export function createChangeTraces(tracing: Tracing, clock: () => number = Date.now): ChangeTraces {
  const heard = new Map<bigint, { readonly traceparent: string; readonly at: number }>();
  return {
    heard(position, traceparent) {
      heard.set(position, { traceparent, at: clock() });
      // The oldest goes (a Map keeps insertion order): one whose change never came here.
      if (heard.size > CAPACITY) heard.delete(heard.keys().next().value as bigint);
    },
    delivered(position, startedAt, watchers) {
      const trace = heard.get(position);
      if (trace === undefined) return;
      heard.delete(position);
      const attributes = { 'crucible.position': position.toString() };
      tracing.record('projection', trace.traceparent, trace.at, attributes);
      tracing.record('stream update', trace.traceparent, startedAt, { ...attributes, 'crucible.watchers': watchers });
    },
  };
}
