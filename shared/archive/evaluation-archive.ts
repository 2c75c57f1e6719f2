import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { EvaluationEvent, RecordedEvent } from '../domain';

/**
 * The cold tier: an evaluation that aged past ACTIVE_RETENTION, written by the retention job
 * (services/command/application/retention.ts) as one gzip-compressed NDJSON object in S3, and
 * read back by the query side when PostgreSQL no longer holds it. NDJSON rather than Parquet:
 * the records are nested (event data, metadata) and read one evaluation at a time, which is
 * what a line per record and one object per evaluation serve; `zcat | jq` reads it, and no
 * columnar library has to be trusted with the only copy. One object per evaluation: a read
 * fetches exactly what it needs, and writing it again (a run killed after the upload) puts
 * the same bytes under the same key.
 *
 * Lines, in order: one `evaluation` (its row as PostgreSQL had it), its `event`s in position
 * order, its inline `body`s (outputs, errors and code kept in PostgreSQL; those in S3 stay
 * there, their rows too), its `metric` points in series order. Every line names `kind`.
 */
export const ARCHIVE_FORMAT = 1;

/** Under this prefix, outside the services' `evaluations/` (the orphan sweeper's). */
export const ARCHIVE_PREFIX = 'archive/';

export function archiveKey(tenant: string, evalId: string): string {
  return `${ARCHIVE_PREFIX}evaluations/${tenant}/${evalId}.ndjson.gz`;
}

export interface ArchivedEvent extends RecordedEvent {
  readonly reporter: string | null;
}

/** An `evaluation_events` row as ARCHIVED_EVENT_COLUMNS select it. */
export interface ArchivedEventRow {
  readonly position: string;
  readonly revision: string;
  readonly event_type: EvaluationEvent['type'];
  readonly data: EvaluationEvent['data'];
  readonly recorded_at: Date;
  readonly reporter: string | null;
}

/**
 * The columns of `evaluation_events` an archived event is made of. Order such rows by the table's
 * column (`ORDER BY evaluation_events.position`), not by the text alias of the same name ('10'
 * before '9').
 */
export const ARCHIVED_EVENT_COLUMNS = `position::text AS position, revision::text AS revision, event_type, data, recorded_at, reporter`;

export function archivedEventOf(evalId: string, row: ArchivedEventRow): ArchivedEvent {
  return {
    position: row.position,
    evalId,
    revision: row.revision,
    recordedAt: row.recorded_at.toISOString(),
    event: { type: row.event_type, data: row.data } as EvaluationEvent,
    reporter: row.reporter,
  };
}

export interface ArchivedBody {
  readonly kind: 'code' | 'output' | 'error';
  readonly size: number;
  readonly content: Buffer;
}

export interface ArchivedMetric {
  readonly id: string;
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly step?: string;
  readonly measuredAt: Date;
  readonly recordedAt: Date;
  readonly revision: string;
}

export interface EvaluationArchive {
  readonly evalId: string;
  readonly tenant: string;
  /** The `evaluations` row as JSON (for people and restores; reads fold the events). */
  readonly row: Readonly<Record<string, unknown>>;
  readonly events: readonly ArchivedEvent[];
  readonly bodies: readonly ArchivedBody[];
  readonly metrics: readonly ArchivedMetric[];
}

/** The object's bytes and what identifies them. */
export interface EncodedArchive {
  readonly bytes: Buffer;
  readonly sha256: string;
}

export function encodeArchive(archive: EvaluationArchive): EncodedArchive {
  const lines: string[] = [
    JSON.stringify({
      kind: 'evaluation',
      format: ARCHIVE_FORMAT,
      evalId: archive.evalId,
      tenant: archive.tenant,
      row: archive.row,
    }),
  ];
  for (const event of archive.events) lines.push(JSON.stringify({ kind: 'event', ...event }));
  for (const body of archive.bodies)
    lines.push(
      JSON.stringify({ kind: 'body', bodyKind: body.kind, size: body.size, content: body.content.toString('base64') }),
    );
  for (const metric of archive.metrics) lines.push(JSON.stringify({ kind: 'metric', ...metric }));
  // zlib writes no modification time into the header: with a fixed level, the same archive is
  // the same bytes, whoever writes it (a run that writes it again changes nothing).
  const bytes = gzipSync(`${lines.join('\n')}\n`, { level: 6 });
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** Not an archive this version reads: INTERNAL for the reader (the object is ours). */
export class ArchiveFormatError extends Error {
  override name = 'ArchiveFormatError';
}

export function decodeArchive(bytes: Buffer): EvaluationArchive {
  const text = gunzipSync(bytes).toString('utf8');
  let head: { evalId: string; tenant: string; row: Record<string, unknown> } | undefined;
  const events: ArchivedEvent[] = [];
  const bodies: ArchivedBody[] = [];
  const metrics: ArchivedMetric[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const record = JSON.parse(line) as { kind?: string } & Record<string, unknown>;
    switch (record.kind) {
      case 'evaluation':
        if (record.format !== ARCHIVE_FORMAT)
          throw new ArchiveFormatError(`archive format ${String(record.format)} is not ${ARCHIVE_FORMAT}`);
        head = record as unknown as typeof head;
        break;
      case 'event': {
        const { position, evalId, revision, recordedAt, event, reporter } = record as unknown as ArchivedEvent;
        events.push({ position, evalId, revision, recordedAt, event, reporter });
        break;
      }
      case 'body':
        bodies.push({
          kind: record.bodyKind as ArchivedBody['kind'],
          size: Number(record.size),
          content: Buffer.from(String(record.content), 'base64'),
        });
        break;
      case 'metric': {
        const m = record as unknown as Record<keyof ArchivedMetric, string | number>;
        metrics.push({
          id: String(m.id),
          name: String(m.name),
          value: Number(m.value),
          unit: String(m.unit),
          ...(m.step !== undefined ? { step: String(m.step) } : {}),
          measuredAt: new Date(String(m.measuredAt)),
          recordedAt: new Date(String(m.recordedAt)),
          revision: String(m.revision),
        });
        break;
      }
      default:
        throw new ArchiveFormatError(`unknown archive line kind ${JSON.stringify(record.kind)}`);
    }
  }
  if (head === undefined) throw new ArchiveFormatError('archive has no evaluation line');
  return { evalId: head.evalId, tenant: head.tenant, row: head.row, events, bodies, metrics };
}
