import type { sendUnaryData, ServerUnaryCall, ServerWritableStream } from '@grpc/grpc-js';
import { Evaluation, EventType } from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  EvaluationQueryServiceService,
  type GetEvaluationRequest,
  type GetEvaluationResponse,
  type WatchEvaluationRequest,
  type WatchEvaluationResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { requiredEnv, serveFloor } from './serve';

/**
 * Floor for lookups and fan-out: the query service's GetEvaluation and WatchEvaluation served
 * by bare grpc-js from memory. Every answer is FLOOR_EVALUATION (an Evaluation as JSON, taken
 * from the real service so messages have the same size) with the asked id.
 *
 * SIGUSR2 writes one update (the next revision) to every open WatchEvaluation stream: the
 * fan-out floor's trigger, sent by the bench with a wall-clock timestamp.
 */
const template = Evaluation.fromJSON(JSON.parse(requiredEnv('FLOOR_EVALUATION')));
const streams = new Set<ServerWritableStream<WatchEvaluationRequest, WatchEvaluationResponse>>();
let revision = Number(template.revision);

function update(evalId: string): WatchEvaluationResponse {
  const evaluation = { ...template, evalId, revision: String(revision) };
  return {
    update: {
      evaluation,
      eventType: EventType.EVENT_TYPE_EVALUATION_STARTED,
      revision: String(revision),
      position: String(revision),
    },
  };
}

serveFloor(EvaluationQueryServiceService, {
  getEvaluation(
    call: ServerUnaryCall<GetEvaluationRequest, GetEvaluationResponse>,
    callback: sendUnaryData<GetEvaluationResponse>,
  ) {
    callback(null, { evaluation: { ...template, evalId: call.request.evalId } });
  },
  watchEvaluation(call: ServerWritableStream<WatchEvaluationRequest, WatchEvaluationResponse>) {
    call.write(update(call.request.evalId));
    streams.add(call);
    call.on('cancelled', () => streams.delete(call));
  },
});

process.on('SIGUSR2', () => {
  revision++;
  for (const call of streams) call.write(update(call.request.evalId));
});
