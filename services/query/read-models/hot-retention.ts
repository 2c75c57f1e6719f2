import { isTerminalProto } from '../../../shared/domain';
import type { Evaluation } from '../../../shared/generated/crucible/storage/v1/evaluation';
import { CREATED_DIGITS } from './evaluation-list';

/**
 * HOT_RETENTION: a terminal evaluation leaves the Redis read models (its record and its index
 * memberships: lists, counts) once it has not changed for this long; reads of it then go to
 * PostgreSQL or the archive (archive/retired-evaluations.ts), and nothing puts it back unless
 * an event does. The rule, once, for the sweep (redis/hot-retention-sweep.ts), the repairs (which must
 * not write such an evaluation back) and the consistency check.
 */
export function pastHotRetention(state: Pick<Evaluation, 'status' | 'updatedAt'>, now: number, hotMs: number): boolean {
  return isTerminalProto(state.status) && (state.updatedAt?.getTime() ?? 0) < now - hotMs;
}

/**
 * The list member bound below which every evaluation past HOT_RETENTION is found: an
 * evaluation changes no earlier than it was created, so one unchanged since `now - hotMs` was
 * created before it (members sort by creation time: read-models/evaluation-list.ts).
 */
export function hotRetentionBound(now: number, hotMs: number): string {
  return `${String(Math.max(0, now - hotMs)).padStart(CREATED_DIGITS, '0')}:`;
}
