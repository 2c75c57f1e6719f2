import { createHash } from 'node:crypto';

/**
 * The original platform's file store (its FileStorage backend), as `npm run import-legacy`
 * reads it (docs/operations.md, "Import from the old platform"):
 *
 *   DIR/evaluations/<id>.json  {"id", "status", "code", "output", "error", "created_at",
 *                               "started_at", "completed_at", "execution_time", and optionally
 *                               "language", "engine", "timeout" (seconds), "exit_code"}
 *   DIR/events/<id>.json       [{"type", "message", "timestamp"}, …]   (optional)
 *   DIR/metadata/<id>.json     {…}                                    (optional)
 *
 * Each evaluation becomes the commands an executor would have sent (submit, then start,
 * complete, fail or cancel, as its status says), each with a request id derived from its id and
 * step, so that running the import again repeats nothing. What our lifecycle has no field for —
 * the original timestamps, the execution time, the old event messages, a completed run's error
 * text — is kept in the metadata under `legacy`, beside the metadata file's keys.
 */

export type LegacyStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

/** One command of an import, in the order they are sent. */
export type LegacyCommand =
  | {
      readonly kind: 'submit';
      readonly requestId: string;
      readonly code: string;
      readonly language: string;
      readonly engine: string;
      readonly timeoutSeconds: number;
      readonly metadata: Record<string, unknown>;
    }
  | { readonly kind: 'start'; readonly requestId: string }
  | { readonly kind: 'complete'; readonly requestId: string; readonly output: Buffer; readonly exitCode: number }
  | { readonly kind: 'fail'; readonly requestId: string; readonly error: string; readonly exitCode: number }
  | { readonly kind: 'cancel'; readonly requestId: string };

export interface LegacyEvaluation {
  readonly evalId: string;
  readonly commands: readonly LegacyCommand[];
}

/** A file the import cannot take, and why (the report names it with its path). */
export class LegacyFormatError extends Error {
  override name = 'LegacyFormatError';
}

/** The timeout of an evaluation whose file gives none (the old platform's default). */
const DEFAULT_TIMEOUT_SECONDS = 300;

/** The executor the imported starts name: the old platform recorded none. */
export const LEGACY_EXECUTOR = 'legacy-import';

const STATUSES: Readonly<Record<string, LegacyStatus>> = {
  queued: 'queued',
  pending: 'queued',
  running: 'running',
  completed: 'completed',
  succeeded: 'completed',
  failed: 'failed',
  error: 'failed',
  timeout: 'failed',
  cancelled: 'cancelled',
  canceled: 'cancelled',
};

/** A completed run's error text kept in the metadata, at most this long (the metadata is bounded). */
const ERROR_IN_METADATA_CHARS = 8 * 1024;
/** Old event messages kept, at most this many (the first ones: how it began), each this long. */
const EVENTS_IN_METADATA = 100;
const EVENT_MESSAGE_CHARS = 1024;

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function optionalText(record: Record<string, unknown>, field: string): string | undefined {
  const value = record[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new LegacyFormatError(`"${field}" must be a string`);
  return value;
}

function optionalTime(record: Record<string, unknown>, field: string): string | undefined {
  const value = optionalText(record, field);
  if (value === undefined || value === '') return undefined;
  if (Number.isNaN(Date.parse(value)))
    throw new LegacyFormatError(`"${field}" is not a timestamp: ${JSON.stringify(value)}`);
  return new Date(value).toISOString();
}

/** A request id for step `step` of the evaluation `evalId`: the same on every run. */
export function legacyRequestId(evalId: string, step: string): string {
  return `legacy-${createHash('sha256').update(evalId).digest('hex').slice(0, 32)}-${step}`;
}

/**
 * The commands that import one evaluation, from the texts of its files (`events` and `metadata`
 * undefined when it has none). Throws LegacyFormatError saying what is wrong.
 */
export function legacyEvaluation(
  fileName: string,
  texts: { readonly evaluation: string; readonly events?: string; readonly metadata?: string },
): LegacyEvaluation {
  const parse = (what: string, text: string): unknown => {
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new LegacyFormatError(`${what} is not JSON: ${(err as Error).message}`);
    }
  };
  const record = parse('the evaluation file', texts.evaluation);
  if (!isObject(record)) throw new LegacyFormatError('the evaluation file must hold a JSON object');
  const evalId = optionalText(record, 'id');
  if (evalId === undefined || evalId === '') throw new LegacyFormatError('"id" is missing');
  if (`${evalId}.json` !== fileName)
    throw new LegacyFormatError(`"id" ${JSON.stringify(evalId)} does not match the file name ${fileName}`);
  const statusText = optionalText(record, 'status');
  const status = statusText === undefined ? undefined : STATUSES[statusText.toLowerCase()];
  if (status === undefined)
    throw new LegacyFormatError(
      `"status" ${JSON.stringify(statusText)} is none of ${Object.keys(STATUSES).join(', ')}`,
    );
  const code = optionalText(record, 'code');
  if (code === undefined || code === '') throw new LegacyFormatError('"code" is missing');
  const executionTime = record.execution_time;
  if (executionTime !== undefined && executionTime !== null && typeof executionTime !== 'number')
    throw new LegacyFormatError('"execution_time" must be a number of seconds');
  const timeout = record.timeout;
  if (timeout !== undefined && timeout !== null && !Number.isInteger(timeout))
    throw new LegacyFormatError('"timeout" must be a whole number of seconds');
  const exitCode = record.exit_code;
  if (exitCode !== undefined && exitCode !== null && !Number.isInteger(exitCode))
    throw new LegacyFormatError('"exit_code" must be a whole number');

  let events: { type: string; message: string; timestamp?: string }[] = [];
  if (texts.events !== undefined) {
    const parsed = parse('its events file', texts.events);
    if (!Array.isArray(parsed)) throw new LegacyFormatError('its events file must hold a JSON list');
    events = parsed.map((event: unknown, i) => {
      if (!isObject(event)) throw new LegacyFormatError(`its events file: entry ${i} is not an object`);
      const timestamp = optionalTime(event, 'timestamp');
      return {
        type: optionalText(event, 'type') ?? '',
        message: (optionalText(event, 'message') ?? '').slice(0, EVENT_MESSAGE_CHARS),
        ...(timestamp !== undefined ? { timestamp } : {}),
      };
    });
  }
  let metadata: Record<string, unknown> = {};
  if (texts.metadata !== undefined) {
    const parsed = parse('its metadata file', texts.metadata);
    if (!isObject(parsed)) throw new LegacyFormatError('its metadata file must hold a JSON object');
    if ('legacy' in parsed)
      throw new LegacyFormatError(
        'its metadata file has a key "legacy", where the import keeps what the lifecycle cannot',
      );
    metadata = parsed;
  }

  const error = optionalText(record, 'error') ?? '';
  const legacy: Record<string, unknown> = {
    status: statusText,
    ...optionalField('created_at', optionalTime(record, 'created_at')),
    ...optionalField('started_at', optionalTime(record, 'started_at')),
    ...optionalField('completed_at', optionalTime(record, 'completed_at')),
    ...optionalField('execution_time_seconds', typeof executionTime === 'number' ? executionTime : undefined),
    ...(events.length > 0 ? { events: events.slice(0, EVENTS_IN_METADATA) } : {}),
    ...(events.length > EVENTS_IN_METADATA ? { events_dropped: events.length - EVENTS_IN_METADATA } : {}),
    // A failure's error goes to FailEvaluation; any other run's is kept here.
    ...(status !== 'failed' && error !== '' ? { error: error.slice(0, ERROR_IN_METADATA_CHARS) } : {}),
    ...(status !== 'failed' && error.length > ERROR_IN_METADATA_CHARS ? { error_truncated: true } : {}),
  };

  const commands: LegacyCommand[] = [
    {
      kind: 'submit',
      requestId: legacyRequestId(evalId, 'submit'),
      code,
      language: optionalText(record, 'language') ?? 'python',
      engine: optionalText(record, 'engine') ?? 'docker',
      timeoutSeconds: typeof timeout === 'number' ? timeout : DEFAULT_TIMEOUT_SECONDS,
      metadata: { ...metadata, legacy },
    },
  ];
  if (status === 'cancelled') commands.push({ kind: 'cancel', requestId: legacyRequestId(evalId, 'cancel') });
  if (status === 'running' || status === 'completed' || status === 'failed')
    commands.push({ kind: 'start', requestId: legacyRequestId(evalId, 'start') });
  if (status === 'completed')
    commands.push({
      kind: 'complete',
      requestId: legacyRequestId(evalId, 'complete'),
      output: Buffer.from(optionalText(record, 'output') ?? '', 'utf8'),
      exitCode: typeof exitCode === 'number' ? exitCode : 0,
    });
  if (status === 'failed')
    commands.push({
      kind: 'fail',
      requestId: legacyRequestId(evalId, 'fail'),
      error: error === '' ? `failed on the old platform (status ${statusText})` : error,
      exitCode: typeof exitCode === 'number' ? exitCode : 1,
    });
  return { evalId, commands };
}

function optionalField(name: string, value: unknown): Record<string, unknown> {
  return value === undefined ? {} : { [name]: value };
}
