import { createHash } from 'node:crypto';
import type { Command } from './commands';

function canonical(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return `sha256:${createHash('sha256').update(value).digest('hex')}`;
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/**
 * Hex SHA-256 of a command's content: what it asks for, not how it was delivered (request id,
 * expected revision and, for a submit, a missing eval_id are left out). Two commands with the
 * same hash are the same command, which is how a repeat is recognised.
 */
export function commandHash(command: Command): string {
  const { requestId: _requestId, expectedRevision: _expectedRevision, ...content } = command;
  return createHash('sha256')
    .update(JSON.stringify(canonical(content)))
    .digest('hex');
}
