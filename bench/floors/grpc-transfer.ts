import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { sendUnaryData, ServerReadableStream, ServerUnaryCall, ServerWritableStream } from '@grpc/grpc-js';
import {
  EvaluationCommandServiceService,
  type CompleteEvaluationRequest,
  type CompleteEvaluationResponse,
  type CompleteEvaluationStreamRequest,
  type CompleteEvaluationStreamResponse,
} from '../../shared/generated/crucible/storage/v1/command_service';
import {
  EvaluationQueryServiceService,
  type ReadOutputRequest,
  type ReadOutputResponse,
} from '../../shared/generated/crucible/storage/v1/query_service';
import { CHUNK_BYTES } from '../../services/query/handlers/read-output';
import { requiredEnv, serveFloors } from './serve';

/**
 * Floor for output transfer through gRPC alone: the command service's CompleteEvaluation and
 * CompleteEvaluationStream and the query service's ReadOutput served by bare grpc-js from
 * memory, with the services' message size limit. The completions receive every byte and drop
 * them; ReadOutput streams
 * FLOOR_TRANSFER_BYTES bytes in the service's chunk size, waiting for `drain` as the service
 * does. It is the gRPC hop of the output path without S3: the same client, the same messages.
 */
const size = Number(requiredEnv('FLOOR_TRANSFER_BYTES'));
const body = randomBytes(size);

serveFloors(
  [
    {
      definition: EvaluationCommandServiceService,
      implementation: {
        completeEvaluation(
          call: ServerUnaryCall<CompleteEvaluationRequest, CompleteEvaluationResponse>,
          callback: sendUnaryData<CompleteEvaluationResponse>,
        ) {
          callback(null, { evalId: call.request.evalId, revision: '3', position: '1' });
        },
        completeEvaluationStream(
          call: ServerReadableStream<CompleteEvaluationStreamRequest, CompleteEvaluationStreamResponse>,
          callback: sendUnaryData<CompleteEvaluationStreamResponse>,
        ) {
          let evalId = '';
          call.on('data', (message: CompleteEvaluationStreamRequest) => (evalId ||= message.header?.evalId ?? ''));
          call.on('end', () => callback(null, { evalId, revision: '3', position: '1' }));
        },
      },
    },
    {
      definition: EvaluationQueryServiceService,
      implementation: {
        readOutput(call: ServerWritableStream<ReadOutputRequest, ReadOutputResponse>) {
          void (async () => {
            const totalSize = String(size);
            for (let offset = 0; offset < size; offset += CHUNK_BYTES) {
              const chunk = body.subarray(offset, Math.min(size, offset + CHUNK_BYTES));
              if (!call.write({ chunk, offset: String(offset), totalSize })) await once(call, 'drain');
            }
            call.end();
          })();
        },
      },
    },
  ],
  undefined,
  { 'grpc.max_receive_message_length': size + 1024 * 1024 },
);
