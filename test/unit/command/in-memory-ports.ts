import type { RecordedEvent } from '../../../shared/domain';
import type { Logger, LogFields } from '../../../shared/logging';
import type {
  AppendOutcome,
  AppendRequest,
  BlobStore,
  Clock,
  EvaluationStore,
  EventPublisher,
  IdGenerator,
  StoredBody,
} from '../../../services/command/application/ports';
import type { EvaluationSnapshot, LoggedCommand } from '../../../services/command/domain';

/**
 * The side effects the ports performed, in order ("store.append e1@2", "blobs.put <key>",
 * "publish 41", ...): how a test sees that an upload came before the append, or a publish after.
 */
export type Journal = string[];

/** A promise the test settles itself: how a test holds a port call open, with no sleeps. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Runs before a port call: throw to make the call fail, return a promise to hold it open. */
export type Hook<A extends unknown[]> = (...args: A) => void | Promise<void>;

export interface InMemoryEvaluationStore extends EvaluationStore {
  /** Committed events, in position order. */
  readonly events: readonly RecordedEvent[];
  /** Bodies recorded by committed appends. */
  readonly bodies: readonly StoredBody[];
  /** The requests of committed appends. */
  readonly appended: readonly AppendRequest[];
  beforeLoad: Hook<[evalId: string | undefined, requestId: string | undefined]>;
  /** May write through the store (a concurrent writer that gets in first). */
  beforeAppend: Hook<[request: AppendRequest]>;
  /** How many of the next appends answer `conflict` without writing (after `beforeAppend`). */
  forcedConflicts: number;
}

/**
 * The write model as PostgreSQL keeps it, in a Map: an append that does not find the revision
 * it was decided against, or whose request id is taken, is a conflict and writes nothing.
 * Positions start at `firstPosition`, so that a test can tell the store's position from a count.
 */
export function createInMemoryEvaluationStore(journal: Journal, firstPosition = 1n): InMemoryEvaluationStore {
  const evaluations = new Map<string, EvaluationSnapshot>();
  const requests = new Map<string, LoggedCommand>();
  const events: RecordedEvent[] = [];
  const bodies: StoredBody[] = [];
  const appended: AppendRequest[] = [];
  let next = firstPosition;

  function conflicts({ decision, requestId }: AppendRequest): boolean {
    const current = evaluations.get(decision.evalId);
    if (requestId !== undefined && requests.has(requestId)) return true;
    return decision.fromRevision === '0' ? current !== undefined : current?.revision !== decision.fromRevision;
  }

  const store: InMemoryEvaluationStore = {
    events,
    bodies,
    appended,
    beforeLoad: () => undefined,
    beforeAppend: () => undefined,
    forcedConflicts: 0,

    async load(evalId, requestId) {
      journal.push(`store.load ${evalId ?? ''}`);
      await store.beforeLoad(evalId, requestId);
      const snapshot = evalId === undefined ? undefined : evaluations.get(evalId);
      const priorRequest = requestId === undefined ? undefined : requests.get(requestId);
      return {
        ...(snapshot !== undefined ? { snapshot } : {}),
        ...(priorRequest !== undefined ? { priorRequest } : {}),
      };
    },

    async append(request): Promise<AppendOutcome> {
      await store.beforeAppend(request);
      const { decision } = request;
      if (store.forcedConflicts > 0 || conflicts(request)) {
        store.forcedConflicts = Math.max(0, store.forcedConflicts - 1);
        journal.push(`store.conflict ${decision.evalId}@${decision.toRevision}`);
        return { kind: 'conflict' };
      }
      const position = String(next);
      next += 1n;
      const logged: LoggedCommand = {
        evalId: decision.evalId,
        revision: decision.toRevision,
        position,
        commandHash: request.commandHash,
      };
      const existing = evaluations.get(decision.evalId);
      evaluations.set(decision.evalId, {
        evalId: decision.evalId,
        status: decision.status,
        revision: decision.toRevision,
        submitted: existing?.submitted ?? logged,
        latest: logged,
        createdAt: existing?.createdAt ?? request.recordedAt,
        metricNames: decision.metrics?.names ?? existing?.metricNames ?? [],
        logBytes: decision.log
          ? {
              ...(existing?.logBytes ?? { stdout: 0, stderr: 0 }),
              [decision.log.stream]: decision.log.offset + decision.log.length,
            }
          : (existing?.logBytes ?? { stdout: 0, stderr: 0 }),
        ...(existing?.endedAt !== undefined ? { endedAt: existing.endedAt } : {}),
        // The binding, as the evaluations row keeps it (executor_id).
        ...(decision.event.type === 'EvaluationStarted'
          ? { executorId: decision.event.data.executorId }
          : existing?.executorId !== undefined
            ? { executorId: existing.executorId }
            : {}),
      });
      if (request.requestId !== undefined) requests.set(request.requestId, logged);
      if (request.body !== undefined) bodies.push(request.body);
      appended.push(request);
      const event: RecordedEvent = {
        position,
        evalId: decision.evalId,
        revision: decision.toRevision,
        recordedAt: request.recordedAt.toISOString(),
        event: decision.event,
      };
      events.push(event);
      journal.push(`store.append ${decision.evalId}@${decision.toRevision}`);
      return { kind: 'appended', event, state: evaluations.get(decision.evalId)! };
    },
  };
  return store;
}

export interface InMemoryBlobStore extends BlobStore {
  readonly objects: ReadonlyMap<string, Buffer>;
  beforePut: Hook<[key: string]>;
}

/** Objects in a Map; a failed put or stream leaves no object, as the port promises. */
export function createInMemoryBlobStore(journal: Journal): InMemoryBlobStore {
  const objects = new Map<string, Buffer>();
  const blobs: InMemoryBlobStore = {
    objects,
    beforePut: () => undefined,
    async put(key, content) {
      await blobs.beforePut(key);
      objects.set(key, Buffer.from(content));
      journal.push(`blobs.put ${key}`);
      return 's3';
    },
    async putStream(key, size, source) {
      await blobs.beforePut(key);
      const parts: Buffer[] = [];
      for await (const chunk of source) parts.push(chunk);
      const content = Buffer.concat(parts);
      if (content.length !== size) throw new Error(`expected ${size} bytes, got ${content.length}`);
      objects.set(key, content);
      journal.push(`blobs.putStream ${key}`);
      return 's3';
    },
    delete(key) {
      objects.delete(key);
      journal.push(`blobs.delete ${key}`);
      return Promise.resolve();
    },
  };
  return blobs;
}

export interface InMemoryEventPublisher extends EventPublisher {
  /** Every event publish was called with, answered or not. */
  readonly published: readonly RecordedEvent[];
  /** What a publish answers: resolved at once unless a test says otherwise. */
  respond: (event: RecordedEvent) => Promise<void>;
}

export function createInMemoryEventPublisher(journal: Journal): InMemoryEventPublisher {
  const published: RecordedEvent[] = [];
  const publisher: InMemoryEventPublisher = {
    published,
    respond: () => Promise.resolve(),
    publish(event) {
      published.push(event);
      journal.push(`publish ${event.position}`);
      return publisher.respond(event);
    },
  };
  return publisher;
}

/** 2025-01-01T00:00:00Z, one second later at each reading. */
export function steppingClock(): Clock {
  let readings = 0;
  return { now: () => new Date(Date.UTC(2025, 0, 1) + 1000 * readings++) };
}

/** id-1, id-2, ... */
export function sequentialIds(): IdGenerator & { readonly issued: readonly string[] } {
  const issued: string[] = [];
  return Object.assign(
    () => {
      const id = `id-${issued.length + 1}`;
      issued.push(id);
      return id;
    },
    { issued },
  );
}

export interface LogEntry {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly msg: string;
  readonly fields: LogFields;
}

export interface RecordingLogger extends Logger {
  readonly entries: readonly LogEntry[];
  /** Resolves with the next entry at `level` (or the earliest one already logged that no call took). */
  next(level: LogEntry['level']): Promise<LogEntry>;
}

export function recordingLogger(): RecordingLogger {
  const entries: LogEntry[] = [];
  const taken = new Set<LogEntry>();
  const waiters: { level: LogEntry['level']; resolve: (entry: LogEntry) => void }[] = [];
  const log =
    (level: LogEntry['level']) =>
    (msg: string, fields: LogFields = {}): void => {
      const entry = { level, msg, fields };
      entries.push(entry);
      const waiter = waiters.findIndex((w) => w.level === level);
      if (waiter >= 0) {
        taken.add(entry);
        waiters.splice(waiter, 1)[0]?.resolve(entry);
      }
    };
  const logger: RecordingLogger = {
    entries,
    next(level) {
      const logged = entries.find((e) => e.level === level && !taken.has(e));
      if (logged !== undefined) {
        taken.add(logged);
        return Promise.resolve(logged);
      }
      return new Promise((resolve) => waiters.push({ level, resolve }));
    },
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    child: () => logger,
  };
  return logger;
}
