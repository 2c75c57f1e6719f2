import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export type ToWatchers =
  | { type: 'open'; address: string; evalId: string; streams: number; perConnection: number }
  | { type: 'expect'; revision: string }
  | { type: 'close' };

export type FromWatchers =
  | { type: 'ready'; seconds: number }
  | { type: 'received'; revision: string; firstAt: number; medianAt: number; lastAt: number }
  | { type: 'error'; message: string };

/** When the streams received one revision (wall-clock ms, see progress.wallClockMs). */
export interface Arrival {
  readonly firstAt: number;
  readonly medianAt: number;
  readonly lastAt: number;
}

/** Many WatchEvaluation streams held by a child process (watcher-process.ts). */
export interface Watchers {
  /** Resolves once every stream has received its first message (the current state). */
  readonly ready: Promise<number>;
  /** Resolves when every stream has received `revision`; call before triggering it. */
  expect(revision: string, timeoutMs: number): Promise<Arrival>;
  close(): Promise<void>;
}

/**
 * Opens `streams` WatchEvaluation streams on `evalId`, `perConnection` per HTTP/2 connection
 * (each connection a client with its own subchannel).
 */
export function openWatchers(address: string, evalId: string, streams: number, perConnection = 100): Watchers {
  const child: ChildProcess = fork(join(__dirname, 'watcher-process.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let failure: Error | undefined;
  const listeners = new Set<(m: FromWatchers) => void>();
  child.on('message', (message: FromWatchers) => {
    if (message.type === 'error') failure ??= new Error(message.message);
    for (const listener of listeners) listener(message);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const next = <T extends FromWatchers['type']>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<FromWatchers, { type: T }>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`watchers: no "${type}" within ${timeoutMs} ms`)), timeoutMs);
      const done = (err?: Error, value?: Extract<FromWatchers, { type: T }>): void => {
        clearTimeout(timer);
        listeners.delete(listener);
        if (err !== undefined) reject(err);
        else resolve(value!);
      };
      const listener = (message: FromWatchers): void => {
        if (message.type === 'error') done(failure);
        else if (message.type === type) done(undefined, message as Extract<FromWatchers, { type: T }>);
      };
      if (failure !== undefined) done(failure);
      else listeners.add(listener);
    });
  const ready = next('ready', 300_000).then((m) => m.seconds);
  child.send({ type: 'open', address, evalId, streams, perConnection } satisfies ToWatchers);
  return {
    ready,
    async expect(revision, timeoutMs) {
      const received = next('received', timeoutMs);
      child.send({ type: 'expect', revision } satisfies ToWatchers);
      const { firstAt, medianAt, lastAt } = await received;
      return { firstAt, medianAt, lastAt };
    },
    async close() {
      if (child.exitCode === null) child.send({ type: 'close' } satisfies ToWatchers);
      await exited;
    },
  };
}
