import {
  commandHash,
  memoizeDigest,
  planBody,
  type BodyLimits,
  type BodyPlan,
  type Command,
  type Digest,
} from '../domain';
import type { StoredBody } from './ports';

/** What a command needs computed once, before its first round: every round reuses it. */
export interface PreparedCommand {
  /** The command's content hash (see commandHash): how a repeat is recognised. */
  readonly hash: string;
  /** Where the command's body goes (Complete and Fail only). */
  readonly plan: BodyPlan | undefined;
  /** The body as the write records it; undefined when there is none to record. */
  readonly body: StoredBody | undefined;
}

/**
 * Hashes the command and plans its body. One SHA-256 of a large body serves the command hash,
 * the S3 key and the upload's signature, hence one memoized digest for all three.
 */
export function prepareCommand(command: Command, limits: BodyLimits): PreparedCommand {
  const digest = memoizeDigest();
  const hash = commandHash(command, digest);
  const plan = planCommandBody(command, limits, digest);
  return { hash, plan, body: storedBodyOf(command, plan) };
}

/** The plan for the command's body: the output of a Complete, the error text of a Fail. */
function planCommandBody(command: Command, limits: BodyLimits, digest: Digest): BodyPlan | undefined {
  if (command.type === 'CompleteEvaluation') return planBody(command.evalId, 'output', command.output, limits, digest);
  if (command.type === 'FailEvaluation') {
    return planBody(command.evalId, 'error', Buffer.from(command.error, 'utf8'), limits, digest);
  }
  return undefined;
}

/** The body row the write records: its bytes when kept in PostgreSQL, else its S3 key. */
function storedBodyOf(command: Command, plan: BodyPlan | undefined): StoredBody | undefined {
  if (plan === undefined || plan.storage === 'none') return undefined;
  const kind = command.type === 'FailEvaluation' ? 'error' : 'output';
  const size = plan.ref.size;
  return plan.storage === 'postgres' ? { kind, size, content: plan.content } : { kind, size, s3Key: plan.key };
}
