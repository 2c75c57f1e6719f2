import type {
  GetProjectionStatusRequest,
  GetProjectionStatusResponse,
} from '../../../shared/generated/crucible/storage/v1/query_service';
import type { Logger } from '../../../shared/logging';
import type { EventLog } from '../projection/event-log';
import type { ProjectorStatus } from '../projection/projector';
import { minCheckpoint, type Checkpoints } from '../read-models/checkpoints';

/**
 * GetProjectionStatus: how far the read models are behind the event log, read fresh from
 * Redis (checkpoints) and PostgreSQL (head, age of the oldest unapplied event). When
 * PostgreSQL is down it still answers, from what this replica last saw.
 */
const POSTGRES_WAIT_MS = 1000;

export function createGetProjectionStatus(deps: {
  readonly projector: { status(): ProjectorStatus };
  readonly checkpoints: Checkpoints;
  readonly eventLog: EventLog;
  readonly logger: Logger;
  readonly clock?: () => number;
}) {
  const clock = deps.clock ?? Date.now;
  return async function getProjectionStatus(
    _request: GetProjectionStatusRequest,
  ): Promise<GetProjectionStatusResponse> {
    const partitionCheckpoints = await deps.checkpoints.readAll();
    const checkpoint = minCheckpoint(partitionCheckpoints);
    const status = deps.projector.status();
    let head = status.head > checkpoint ? status.head : checkpoint;
    let lagSeconds = 0;
    let timer: NodeJS.Timeout | undefined;
    try {
      // The status must answer when PostgreSQL is slow or down: that is when it is needed.
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('PostgreSQL did not answer in time')), POSTGRES_WAIT_MS);
      });
      const fromLog = async (): Promise<void> => {
        const logHead = await deps.eventLog.headPosition();
        if (logHead > head) head = logHead;
        if (head > checkpoint) {
          const oldest = await deps.eventLog.recordedAt(checkpoint + 1n);
          if (oldest !== undefined) lagSeconds = Math.max(0, (clock() - oldest.getTime()) / 1000);
        }
      };
      await Promise.race([fromLog(), timeout]);
    } catch (err) {
      deps.logger.debug('projection status without PostgreSQL', { err });
      if (head > checkpoint && status.behindSince !== undefined) lagSeconds = (clock() - status.behindSince) / 1000;
    } finally {
      clearTimeout(timer);
    }
    return {
      checkpoint: checkpoint.toString(),
      headPosition: head.toString(),
      lagPositions: (head - checkpoint).toString(),
      lagSeconds,
      caughtUp: status.caughtUp,
      partitionCheckpoints: partitionCheckpoints.map(String),
      catchUpEvents: status.catchUpEvents.toString(),
      stalledReason: status.stalled ?? '',
    };
  };
}
