import { isCluster, type RedisClient } from '../../../shared/redis';
import { createWaker } from '../live/waker';
import type { Logger } from '../../../shared/logging';
import type { ChangeHub } from '../live/change-hub';
import { decodeChangeLogEntry, positionOfEntryId, type ChangeLogEntry } from '../read-models/change-log';
import { partitionNumbers, type KeyLayout } from '../read-models/keys';
import { createBoundedRangeReader, partitionShare } from './bounded-range';
import { isChangeLogHole } from './change-log-holes';
import type { UndecodableEntries } from './undecodable-entries';
import type { MetadataSource } from './metadata-source';

export interface ChangeLogTail {
  /**
   * Starts following the change log after the position `from` resolves to (retried until
   * Redis answers: normally the read models' checkpoint). Returns at once.
   */
  start(from: () => Promise<bigint>): void;
  /**
   * The change log may have grown (this replica's projector took a step). Ends the wait of a
   * tail that polls (on a cluster); one that blocks in XREAD needs no telling.
   */
  nudge(): void;
  stop(): Promise<void>;
}

export interface ChangeLogTailOptions {
  /**
   * A connection used for nothing else: XREAD BLOCK holds it for up to `blockMs`, and every
   * other command sent on it would wait behind the block. A cluster client is not blocked on
   * (one XREAD cannot name keys of several slots, and a blocked node connection would hold
   * every other command to that node): the tail then polls each partition, when nudged and
   * every `pollMs`.
   */
  readonly blocking: RedisClient;
  /** A normal connection, to CLIENT UNBLOCK the blocking one on stop. */
  readonly commands: RedisClient;
  readonly layout: KeyLayout;
  readonly hub: ChangeHub;
  readonly logger: Logger;
  readonly blockMs?: number;
  /** How long a polling tail waits for a nudge before it reads anyway. */
  readonly pollMs?: number;
  /** Entries per partition the blocking XREAD returns (it has no byte bound: keep it small). */
  readonly count?: number;
  /**
   * Told of each entry no client could decode; the tail publishes it as such, in its place
   * (read-models/change-log.ts). Defaults to reports on `logger`.
   */
  readonly undecodable: UndecodableEntries;
  /** Puts back the metadata updates are stored without (read-models/stored-update.ts). */
  readonly metadata: MetadataSource;
  /** Told after each change went to the hub's watchers: its position, and when its delivery began (ms). */
  readonly onPublished?: (position: bigint, startedAt: number) => void;
}

/**
 * How long entries may wait behind a missing position before the tail asks whether it is a
 * hole (one round trip for the checkpoints, one for the position): a partition's share of a
 * step normally lands within a script's run, and asking at every out-of-order landing would
 * double the tail's Redis calls. Also the XREAD block time while entries wait.
 */
const HOLE_WAIT_MS = 250;
/** Entries held behind a missing position past which the tail asks at once. */
const MAX_PENDING = 10_000;

/** Entries and bytes per partition of one drain step (see BOUNDED_RANGE_LUA). */
const DRAIN_COUNT = 1000;
const DRAIN_BYTES = 4 * 1024 * 1024;

/**
 * The replica's one live feed: follows every partition's change-log stream with XREAD BLOCK
 * and hands the hub each change in global position order. The change log is written in the
 * same atomic step as the read models, so what the hub dispatches is exactly what is applied,
 * whichever replica applied it. Partitions are merged by position: an entry is dispatched only
 * once every position before it was (one partition's share of a batch may land before
 * another's).
 *
 * Memory stays bounded however large the entries: the blocking XREAD, which Redis cannot bound
 * by bytes, asks for a few entries only; when it returns that many (a backlog), the tail drains
 * with byte-bounded reads until they come back short, then blocks again. A quiet feed costs one
 * round trip per wake-up, as before.
 *
 * An entry no client could decode is published in its place, marked `unreadable` (streams send
 * a progress message for it), and reported: it never stops the feed.
 *
 * On a Redis Cluster the tail polls instead of blocking (see `blocking`): each read is a drain
 * step, one bounded read per partition, after a nudge from the replica's projector (every
 * change is applied, or found applied, by each replica's projector soon after its commit) or
 * after `pollMs` at the latest.
 */
export function createChangeLogTail(options: ChangeLogTailOptions): ChangeLogTail {
  const { blocking, commands, layout, hub, logger } = options;
  const { undecodable, metadata } = options;
  const blockMs = options.blockMs ?? 5000;
  const polling = isCluster(blocking);
  const pollMs = options.pollMs ?? 1000;
  const waker = createWaker();
  let nudged = false;
  const count = options.count ?? 16;
  const partitions = partitionNumbers(layout);
  const keys = partitions.map((p) => layout.changeLog(p));
  const boundedRange = createBoundedRangeReader(blocking);
  const drainBytes = partitionShare(DRAIN_BYTES, partitions.length);
  let stopped = false;
  let loop: Promise<void> | undefined;
  let clientId: number | undefined;
  let stopTimer: (() => void) | undefined;

  const pause = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      stopTimer = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  async function run(resolveFrom: () => Promise<bigint>): Promise<void> {
    let from: bigint | undefined;
    let lastIds: string[] = [];
    let next = 0n;
    const pending = new Map<bigint, ChangeLogEntry>();
    let failures = 0;
    let draining = false;
    // Since when entries have waited behind `next` (undefined: none wait).
    let waitingSince: number | undefined;
    const publishReady = (): void => {
      for (let entry = pending.get(next); entry !== undefined; entry = pending.get(next)) {
        pending.delete(next);
        const startedAt = options.onPublished === undefined ? 0 : Date.now();
        hub.publish(entry.change);
        options.onPublished?.(next, startedAt);
        next += 1n;
      }
    };
    while (!stopped) {
      try {
        if (from === undefined) {
          from = await resolveFrom();
          hub.advanceTo(from);
          lastIds = partitions.map(() => `${from}-0`);
          next = from + 1n;
        }
        if (!polling) clientId ??= Number(await blocking.client('ID'));
        let reply: (readonly [partition: number, entries: [Buffer, Buffer[]][]])[];
        if (polling && !draining) {
          if (!nudged) await waker.sleep(pending.size > 0 ? HOLE_WAIT_MS : pollMs);
          nudged = false;
          if (stopped) break;
        }
        if (draining || polling) {
          const pages = await Promise.all(
            keys.map((key, p) => boundedRange(key, `(${lastIds[p]}`, DRAIN_COUNT, drainBytes)),
          );
          draining = pages.some((page) => page.full);
          reply = pages.map((page, p) => [p, page.entries] as const);
        } else {
          const block = pending.size > 0 ? HOLE_WAIT_MS : blockMs;
          const read = await blocking.xreadBuffer('COUNT', count, 'BLOCK', block, 'STREAMS', ...keys, ...lastIds);
          if (read === null) {
            reply = [];
          } else {
            draining = read.some(([, entries]) => entries.length >= count);
            reply = read.map(([key, entries]) => [keys.indexOf(key.toString()), entries] as const);
          }
        }
        const read: { partition: number; id: string; entry: ChangeLogEntry }[] = [];
        for (const [partition, entries] of reply) {
          for (const [id, fields] of entries) {
            const position = positionOfEntryId(id.toString());
            if (position < next) continue;
            const entry = decodeChangeLogEntry(id, fields);
            if (entry.unreadable !== undefined) {
              undecodable.report({ key: keys[partition] ?? '', position, reason: entry.unreadable });
            }
            read.push({ partition, id: id.toString(), entry });
          }
        }
        read.sort((a, b) => (a.entry.position < b.entry.position ? -1 : a.entry.position > b.entry.position ? 1 : 0));
        // Before the read is taken as done: if the metadata cannot be had, the same entries are
        // read again. Whole updates are held up to the drain's byte budget; the rest is read
        // again (by position: what is kept is the lowest positions).
        const whole = await metadata.complete(
          read.map((r) => r.entry),
          drainBytes * partitions.length,
        );
        for (const entry of whole.entries) pending.set(entry.position, entry);
        if (whole.cut) {
          draining = true;
          for (const { partition, id } of read.slice(0, whole.entries.length)) lastIds[partition] = id;
        } else {
          for (const [partition, entries] of reply) {
            const last = entries[entries.length - 1];
            if (last !== undefined) lastIds[partition] = last[0].toString();
          }
        }
        if (failures > 0) logger.info('change-log tail recovered', { failures });
        failures = 0;
        const before = next;
        publishReady();
        if (pending.size === 0 || next !== before) waitingSince = pending.size === 0 ? undefined : Date.now();
        else waitingSince ??= Date.now();
        // Entries wait behind a position no stream has although every checkpoint is past it:
        // deleted (a hole). Skipped, so that no watcher waits for it for good (an idle partition
        // never moves the trim rule below); a stream that needs continuity sees the jump and
        // re-reads, getting OUT_OF_RANGE naming the position after the hole.
        if (waitingSince !== undefined && (Date.now() - waitingSince >= HOLE_WAIT_MS || pending.size >= MAX_PENDING)) {
          const from = next;
          while (pending.size > 0 && !pending.has(next) && (await isChangeLogHole(blocking, layout, next))) {
            next += 1n;
            publishReady();
          }
          if (next !== from)
            logger.warn('change-log tail skipped positions no stream has (holes)', {
              from: from.toString(),
              resumedAt: next.toString(),
            });
          waitingSince = pending.size === 0 ? undefined : Date.now();
        }
        if (reply.length === 0) continue;
        // Every partition has moved past `next` and it never came: it was trimmed before this
        // replica read it (the tail fell a whole retention behind). Skip it; streams that
        // need continuity see the jump and re-read (getting OUT_OF_RANGE if it is gone).
        const lowestRead = lastIds.reduce(
          (m, id) => {
            const p = positionOfEntryId(id);
            return p < m ? p : m;
          },
          positionOfEntryId(lastIds[0] ?? '0-0'),
        );
        if (pending.size > 0 && lowestRead > next) {
          const resume = [...pending.keys()].reduce((m, p) => (p < m ? p : m));
          logger.warn('change-log tail skipped trimmed positions', {
            from: next.toString(),
            to: (resume - 1n).toString(),
          });
          next = resume;
          publishReady();
        }
      } catch (err) {
        if (stopped) break;
        failures += 1;
        clientId = undefined;
        draining = false;
        const delay = Math.min(2000, 50 * 2 ** Math.min(failures, 6));
        if (failures === 1 || failures % 20 === 0)
          logger.warn('change-log tail failed; retrying', { err, failures, retryInMs: delay });
        await pause(delay);
      }
    }
  }

  return {
    start(from) {
      if (loop !== undefined) return;
      loop = run(from);
    },
    nudge() {
      nudged = true;
      waker.wake();
    },
    async stop() {
      stopped = true;
      stopTimer?.();
      waker.wake();
      if (loop === undefined) return;
      if (clientId !== undefined) {
        // Wake the blocked XREAD now instead of waiting up to blockMs.
        await commands.client('UNBLOCK', clientId).catch(() => undefined);
      }
      // When Redis is down the XREAD waits for a reconnect; closing the connection ends it.
      await Promise.race([loop, new Promise((resolve) => setTimeout(resolve, 500).unref())]);
    },
  };
}
