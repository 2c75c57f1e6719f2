import type { BlobEntry, BlobStore as Store } from '../../../shared/blobs';
import type { BlobHome } from '../../../shared/domain';

/** Which keys rows of PostgreSQL name in a store (postgres/blob-references.ts). */
export interface BlobReferences {
  /** The keys among `keys` that a body or log segment row names in `home`. */
  referenced(home: BlobHome, keys: readonly string[]): Promise<ReadonlySet<string>>;
}

export interface OrphanSweep {
  readonly store: Store;
  readonly home: BlobHome;
  readonly references: BlobReferences;
  /** Objects modified after this are left alone: an upload whose command is still on its way. */
  readonly olderThan: Date;
  /** Report what would go, delete nothing. */
  readonly dryRun: boolean;
}

export interface OrphanReport {
  readonly home: BlobHome;
  /** Objects under the service's prefix that were looked at. */
  readonly examined: number;
  /** The orphans: deleted, or (dry run) to delete. */
  readonly orphans: readonly BlobEntry[];
  readonly bytes: number;
  readonly dryRun: boolean;
}

/** Every key the services write starts so (domain/bodies.ts planBody, streamed uploads). */
export const BLOB_PREFIX = 'evaluations/';
/** Keys looked up in PostgreSQL at a time. */
const BATCH = 500;

/**
 * Finds the objects of a store that no row refers to and that are older than the grace: the
 * uploads whose command then failed (an object is written before its row, so a failed write
 * leaves one), the streamed uploads a refused completion left, the fallback copies that a mover
 * killed after recording the move left. Deletes them unless it is a dry run. An object written
 * again since it was listed (a retried upload of the same content, on its way to a row) has a
 * new modification time and is skipped, and so is anything referenced by then.
 */
export async function sweepOrphans(sweep: OrphanSweep): Promise<OrphanReport> {
  const { store, home, references, olderThan, dryRun } = sweep;
  let examined = 0;
  const orphans: BlobEntry[] = [];
  let batch: BlobEntry[] = [];

  async function settle(): Promise<void> {
    const old = batch.filter((entry) => entry.modifiedAt < olderThan);
    batch = [];
    if (old.length === 0) return;
    const named = await references.referenced(
      home,
      old.map((entry) => entry.key),
    );
    for (const entry of old) {
      if (named.has(entry.key)) continue;
      if (!dryRun && !(await deleteIfUnchanged(store, entry))) continue;
      orphans.push(entry);
    }
  }

  for await (const entry of store.list(BLOB_PREFIX)) {
    examined += 1;
    batch.push(entry);
    if (batch.length >= BATCH) await settle();
  }
  await settle();
  return { home, examined, orphans, bytes: orphans.reduce((sum, o) => sum + o.size, 0), dryRun };
}

/** Deletes the object unless it was written again after it was listed. */
async function deleteIfUnchanged(store: Store, entry: BlobEntry): Promise<boolean> {
  for await (const now of store.list(entry.key)) {
    if (now.key === entry.key && now.modifiedAt.getTime() !== entry.modifiedAt.getTime()) return false;
  }
  await store.delete(entry.key);
  return true;
}

/** The stores blobs are written to: S3, and the fallback directory when there is one. */
export interface BlobHomes {
  readonly s3: Store;
  readonly file?: Store | undefined;
}

/** {@link sweepOrphans} over every store, with objects older than `graceMs` before `now`. */
export async function sweepAllOrphans(deps: {
  readonly homes: BlobHomes;
  readonly references: BlobReferences;
  readonly graceMs: number;
  readonly now: Date;
  readonly dryRun: boolean;
}): Promise<OrphanReport[]> {
  const olderThan = new Date(deps.now.getTime() - deps.graceMs);
  const stores: [BlobHome, Store][] = [['s3', deps.homes.s3]];
  if (deps.homes.file !== undefined) stores.push(['file', deps.homes.file]);
  const reports: OrphanReport[] = [];
  for (const [home, store] of stores) {
    reports.push(await sweepOrphans({ store, home, references: deps.references, olderThan, dryRun: deps.dryRun }));
  }
  return reports;
}
