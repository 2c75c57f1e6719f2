/**
 * What the history and the change log store of an update: the whole `EvaluationUpdate`, except
 * that only the evaluation's first update (revision 1, the submit) carries its metadata. The
 * metadata never changes after the submit and is the bulk of a large state (up to 1 MiB): stored
 * in every update, an evaluation of n events held it 2n + 1 times (docs/read-models.md,
 * "Sizing"). The record always carries it, and readers put it back into every later update
 * before it leaves the service (wire/metadata.ts `withMetadata`; redis/metadata-source.ts), so
 * clients receive whole states as before.
 */
export function storesMetadata(revision: string | bigint): boolean {
  return revision === '1' || revision === 1n;
}
