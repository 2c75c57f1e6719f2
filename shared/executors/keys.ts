/**
 * Where executor health lives in Redis. The command service writes it (ReportExecutorHealth)
 * and the query service reads it (ListExecutors). Keys (P = prefix):
 *
 *   P:{executors}:health:<executor_id>   string  the last report (codec.ts), expiring after the
 *                                                health TTL: present = the executor counts as up
 *   P:{executors}:last-seen              zset    member executor_id, score = when its last report
 *                                                arrived (ms since the epoch, the command service's
 *                                                clock); no TTL, so "gone since when" outlives the
 *                                                report. Members long gone are pruned by writers.
 *
 * One hash tag for all of them: on a Redis Cluster they sit in one slot, so a reader can take the
 * live executors from `last-seen` and MGET their reports in one call, and a writer can set both
 * in one MULTI. The tag holds no prefix, unlike the read models' `{P:n}`: a read-model rebuild
 * deletes every key matching `P:{P:*}:*`, and health must survive it.
 */
export interface ExecutorKeys {
  health(executorId: string): string;
  readonly lastSeen: string;
  /** Every key above, as a glob (what a Redis ACL user is granted). */
  readonly pattern: string;
}

export function executorKeys(prefix: string): ExecutorKeys {
  const base = `${prefix}:{executors}`;
  return Object.freeze({
    // Any executor id is a valid key suffix: Redis keys are binary-safe, and the tag comes first.
    health: (executorId: string) => `${base}:health:${executorId}`,
    lastSeen: `${base}:last-seen`,
    pattern: `${base}:*`,
  });
}
