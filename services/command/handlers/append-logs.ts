import type {
  AppendLogsRequest,
  AppendLogsResponse,
} from '../../../shared/generated/crucible/storage/v1/command_service';
import { ValidationError } from '../../../shared/errors';
import type { ClientStreamHandler } from '../../../shared/grpc';
import type { Limits } from '../../../shared/config';
import type { LogChunkIn } from '../application/log-appender';
import { validateLogChunk, validateLogsHeader } from '../domain';
import type { CommandHandlerDeps } from './deps';

/** The chunks of the messages after the header, validated one by one. */
async function* logChunks(messages: AsyncIterator<AppendLogsRequest>, limits: Limits): AsyncGenerator<LogChunkIn> {
  for (let next = await messages.next(); next.done !== true; next = await messages.next()) {
    const { header, chunk } = next.value;
    if (header !== undefined) {
      throw new ValidationError([
        { field: 'header', rule: 'ONLY_FIRST', description: 'only the first message may be the header' },
      ]);
    }
    if (chunk === undefined || chunk.data.length === 0) continue;
    yield validateLogChunk(chunk, limits);
  }
}

export function createAppendLogs({
  executor,
  limits,
}: CommandHandlerDeps): ClientStreamHandler<AppendLogsRequest, AppendLogsResponse> {
  return async (messages, context) => {
    const iterator = messages[Symbol.asyncIterator]();
    const first = await iterator.next();
    const target = validateLogsHeader(first.done === true ? undefined : first.value.header, limits);
    const { size, result } = await executor.appendLogs(target, logChunks(iterator, limits), context);
    return { size: String(size), revision: result.revision, position: result.position };
  };
}
