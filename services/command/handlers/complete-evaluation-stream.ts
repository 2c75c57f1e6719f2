import { ValidationError } from '../../../shared/errors';
import type {
  CompleteEvaluationStreamRequest,
  CompleteEvaluationStreamResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import type { ClientStreamHandler } from '../../../shared/grpc';
import { validateCompleteHeader } from '../domain';
import type { CommandHandlerDeps } from './deps';

function violation(field: string, rule: string, description: string): ValidationError {
  return new ValidationError([{ field, rule, description }]);
}

/** The output bytes of the messages after the header: exactly `size` of them, or a throw. */
async function* outputChunks(
  messages: AsyncIterator<CompleteEvaluationStreamRequest>,
  size: number,
): AsyncGenerator<Buffer> {
  let received = 0;
  for (let next = await messages.next(); next.done !== true; next = await messages.next()) {
    const { header, outputChunk } = next.value;
    if (header !== undefined) throw violation('header', 'ONLY_FIRST', 'only the first message may be the header');
    if (outputChunk === undefined || outputChunk.length === 0) continue;
    received += outputChunk.length;
    if (received > size) {
      throw violation('output_chunk', 'SIZE_MISMATCH', `the output chunks exceed header.output_size (${size} bytes)`);
    }
    yield outputChunk;
  }
  if (received < size) {
    throw violation(
      'output_chunk',
      'SIZE_MISMATCH',
      `the output chunks add up to ${received} bytes, not header.output_size (${size})`,
    );
  }
}

export function createCompleteEvaluationStream({
  executor,
  limits,
}: CommandHandlerDeps): ClientStreamHandler<CompleteEvaluationStreamRequest, CompleteEvaluationStreamResponse> {
  return async (messages, context) => {
    const iterator = messages[Symbol.asyncIterator]();
    const first = await iterator.next();
    const header = validateCompleteHeader(first.done === true ? undefined : first.value.header, limits);
    return executor.completeStreamed(header, outputChunks(iterator, header.outputSize), context);
  };
}
