import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { endingEvent, EVENT_TYPE_TO_PROTO, statusOfProto } from '../../../shared/domain';
import {
  EventType,
  type Evaluation,
  type EvaluationUpdate,
} from '../../../shared/generated/crucible/storage/v1/evaluation';
import type { KeyLayout } from './keys';
import type { WriteSink } from './write-ops';
import type { Encoded } from '../wire/encoded';

/**
 * Read model: every update of one evaluation that has not ended, in revision order (list index
 * = revision - 1), stored as read-models/stored-update.ts says (the metadata in the first entry
 * only). WatchEvaluation replays it to a client resuming from `after_revision`, and its last
 * entry is the "current state" message (the update carries the event type the record lacks).
 *
 * How an event changes it: the update is put at index revision - 1, replacing that entry and
 * any after it if they are there already (an event applied again after a lost checkpoint, or a
 * repair folding the evaluation from the log) — never appended twice. An event that ends the
 * evaluation deletes the history instead ({@link historyDrop}): nothing follows a terminal
 * state, its last update is the record's state (with the terminal status' event type), and the
 * rare replay of older revisions is folded from the event log. A finished evaluation thus keeps
 * only its record and index entries in Redis.
 */
export function historyWrites(
  layout: KeyLayout,
  partition: number,
  evalId: string,
  revision: string,
  update: Buffer,
  out: WriteSink,
): void {
  out.putAt(layout.history(partition, evalId), Number(revision) - 1, update);
}

/** A terminal evaluation keeps no history (see above). */
export function historyDrop(layout: KeyLayout, partition: number, evalId: string, out: WriteSink): void {
  out.del(layout.history(partition, evalId));
}

/**
 * The last update of an ended evaluation, made from its record (its history is gone): the state,
 * its last event's type (the one that ended it, unless late metrics followed; records written
 * before `last_event_type` existed are always the former), its revision and position. Undefined
 * when the record's status is not terminal.
 */
export function lastUpdateOfEnded(record: Encoded<Evaluation>): Encoded<EvaluationUpdate> | undefined {
  const evaluation = record.message;
  const known = statusOfProto(evaluation.status);
  const ending = known === undefined ? undefined : endingEvent(known);
  if (ending === undefined) return undefined;
  const message: EvaluationUpdate = {
    evaluation,
    eventType:
      evaluation.lastEventType !== EventType.EVENT_TYPE_UNSPECIFIED
        ? evaluation.lastEventType
        : EVENT_TYPE_TO_PROTO[ending],
    revision: evaluation.revision,
    position: evaluation.position,
  };
  // The record's bytes as they are, in field 1: the state is not encoded again.
  const bytes = new BinaryWriter()
    .uint32(10)
    .bytes(record.bytes)
    .uint32(16)
    .int32(message.eventType)
    .uint32(24)
    .int64(message.revision)
    .uint32(32)
    .int64(message.position)
    .finish();
  return { bytes, message };
}

export interface EvaluationHistory {
  /**
   * The latest update (the current state) and how many entries the history holds (read
   * after it), or undefined when the evaluation is unknown. UnavailableError when no client
   * could decode it (an older one is not the current state).
   */
  latest(evalId: string): Promise<{ readonly update: Encoded<EvaluationUpdate>; readonly length: bigint } | undefined>;
  /**
   * Every update with a revision above `revision`, oldest first, but those no client could
   * decode; undefined when there is no history (the evaluation ended, or is unknown).
   */
  after(evalId: string, revision: bigint): Promise<Encoded<EvaluationUpdate>[] | undefined>;
}
