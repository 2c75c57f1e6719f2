import {
  commandHash,
  memoizeDigest,
  planBody,
  relocatedPlan,
  type BodyLimits,
  type BodyPlan,
  type Command,
  type Digest,
} from '../domain';
import type { BlobHome, BodyKind, LogStream } from '../../../shared/domain';
import type { StoredBody } from './ports';

/** What a command needs computed once, before its first round: every round reuses it. */
export interface PreparedCommand {
  /** The command's content hash (see commandHash): how a repeat is recognised. */
  readonly hash: string;
  /** Where the command's body goes (the code of a Submit, the output of a Complete, the error of a Fail). */
  readonly plan: BodyPlan | undefined;
  /** The body as the write records it; undefined when there is none to record. */
  readonly body: StoredBody | undefined;
}

/**
 * Hashes the command and plans its body. One SHA-256 of a large body serves the command hash,
 * the S3 key and the upload's signature, hence one memoized digest for all three. `evalId` is
 * the command's (a submit without one has been given one by now): large code is stored under it.
 */
export function prepareCommand(command: Command, evalId: string, limits: BodyLimits): PreparedCommand {
  const digest = memoizeDigest();
  const hash = commandHash(command, digest);
  const planned = planCommandBody(command, evalId, limits, digest);
  return { hash, plan: planned?.plan, body: planned && storedBodyOf(planned.kind, planned.plan) };
}

/** The plan for the command's body: the code of a Submit, the output of a Complete, the error text of a Fail, a log segment's bytes. */
function planCommandBody(
  command: Command,
  evalId: string,
  limits: BodyLimits,
  digest: Digest,
): { kind: BodyKind | LogStream; plan: BodyPlan } | undefined {
  const plan = (kind: BodyKind | LogStream, content: Buffer): { kind: BodyKind | LogStream; plan: BodyPlan } => ({
    kind,
    plan: planBody(evalId, kind, content, limits, digest),
  });
  if (command.type === 'SubmitEvaluation') return plan('code', Buffer.from(command.code, 'utf8'));
  if (command.type === 'CompleteEvaluation')
    return { kind: 'output', plan: planBody(evalId, 'output', command.output, limits, digest) };
  if (command.type === 'FailEvaluation') return plan('error', Buffer.from(command.error, 'utf8'));
  if (command.type === 'AppendLogSegment') return plan(command.stream, command.data);
  return undefined;
}

/** The body row the write records: its bytes when kept in PostgreSQL, else its S3 key. */
function storedBodyOf(kind: BodyKind | LogStream, plan: BodyPlan): StoredBody | undefined {
  if (plan.storage === 'none') return undefined;
  const size = plan.ref.size;
  if (plan.storage === 'postgres') return { kind, size, content: plan.content };
  return { kind, size, s3Key: plan.key, home: plan.storage === 'uploaded' ? plan.home : 's3' };
}

/**
 * The prepared command with its body stored in `home` rather than S3 (S3 being unreachable, it
 * went to the fallback store): the decision and the row must say where it is.
 */
export function relocated(prepared: PreparedCommand, home: BlobHome): PreparedCommand {
  const { plan, body } = prepared;
  if (plan?.storage !== 's3' || body === undefined) return prepared;
  const moved = relocatedPlan(plan, home);
  return { ...prepared, plan: moved, body: storedBodyOf(body.kind, moved) };
}
