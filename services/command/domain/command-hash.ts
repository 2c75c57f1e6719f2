import { createHash } from 'node:crypto';
import { contentDigest, UploadedOutput, type Digest } from './bodies';
import type { Command } from './commands';

function canonical(value: unknown, digest: Digest): unknown {
  if (Buffer.isBuffer(value)) return `sha256:${digest(value)}`;
  // The same bytes streamed: the same command as when sent in one message.
  if (value instanceof UploadedOutput) return `sha256:${value.digest}`;
  if (Array.isArray(value)) return value.map((item) => canonical(item, digest));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k], digest)]),
    );
  }
  return value;
}

/**
 * Hex SHA-256 of a command's content: what it asks for, not how it was delivered (request id,
 * expected revision and, for a submit, a missing eval_id are left out). Two commands with the
 * same hash are the same command, which is how a repeat is recognised. A body (Buffer) counts
 * by its {@link contentDigest}; `digest` lets the caller share that hash with the body's plan.
 */
export function commandHash(command: Command, digest: Digest = contentDigest): string {
  const { requestId: _requestId, expectedRevision: _expectedRevision, ...content } = command;
  return createHash('sha256')
    .update(JSON.stringify(canonical(content, digest)))
    .digest('hex');
}
