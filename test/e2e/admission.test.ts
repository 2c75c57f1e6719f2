import { status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { Client } from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { RetryInfo } from '../../shared/generated/google/rpc/error_details';
import { Status } from '../../shared/generated/google/rpc/status';
import { call, type Clients } from '../support/clients';
import { startServices, type RunningServices } from '../support/services';

const submission = (i: number) => ({
  evalId: '',
  code: `print(${i})`,
  language: 'python',
  engine: 'docker',
  timeoutSeconds: 30,
  metadata: { suite: 'admission' },
  requestId: '',
});

/** The retry delay a refusal carried in google.rpc.RetryInfo, in ms; undefined when it had none. */
function retryDelayMs(err: ServiceError): number | undefined {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (raw === undefined || typeof raw === 'string') return undefined;
  const info = Status.decode(raw).details.find((d) => d.typeUrl.endsWith('google.rpc.RetryInfo'));
  if (info === undefined) return undefined;
  const delay = RetryInfo.decode(info.value).retryDelay;
  return delay === undefined ? undefined : Number(delay.seconds) * 1000 + delay.nanos / 1e6;
}

async function eventCount(databaseUrl: string): Promise<number> {
  const db = new Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM evaluation_events');
    return rows[0]?.n ?? 0;
  } finally {
    await db.end();
  }
}

describe('e2e: command admission (a burst waits its turn instead of being refused)', function () {
  this.timeout(180_000);

  describe('with the default limits', () => {
    let services: RunningServices;
    let clients: Clients;

    before(async () => {
      services = await startServices();
      ({ clients } = services);
    });

    after(async () => {
      await services?.close();
    });

    it('accepts 10,000 submits sent at once by one client with a 30 s deadline, each written once at its own position', async () => {
      const { command } = clients;
      const before = await eventCount(services.environment.config.databaseUrl);
      const settled = await Promise.allSettled(
        Array.from({ length: 10_000 }, (_, i) => call(command, command.submitEvaluation, submission(i), 30_000)),
      );
      const refused = settled.flatMap((s) => (s.status === 'rejected' ? [(s.reason as Error).message] : []));
      expect(refused.slice(0, 3), `${refused.length} refused`).to.deep.equal([]);
      const positions = new Set(settled.map((s) => (s.status === 'fulfilled' ? s.value.position : '')));
      expect(positions.size).to.equal(10_000);
      expect(await eventCount(services.environment.config.databaseUrl)).to.equal(before + 10_000);
    });
  });

  describe('with a queue of 20 behind 4 in progress', () => {
    let services: RunningServices;
    let clients: Clients;

    before(async () => {
      services = await startServices({ overrides: { MAX_PENDING_COMMANDS: '4', MAX_QUEUED_COMMANDS: '20' } });
      ({ clients } = services);
    });

    after(async () => {
      await services?.close();
    });

    it('refuses what the queue cannot hold with UNAVAILABLE and a RetryInfo, and writes everything it accepted', async () => {
      const { command } = clients;
      const before = await eventCount(services.environment.config.databaseUrl);
      const settled = await Promise.allSettled(
        Array.from({ length: 400 }, (_, i) => call(command, command.submitEvaluation, submission(i), 30_000)),
      );
      const accepted = settled.filter((s) => s.status === 'fulfilled').length;
      const refusals = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as ServiceError] : []));
      expect(refusals.length, 'some of a burst of 400 find the queue full').to.be.greaterThan(0);
      for (const err of refusals) {
        expect(err.code, err.message).to.equal(status.UNAVAILABLE);
        expect(err.details).to.match(/overloaded: .*waiting \(MAX_QUEUED_COMMANDS\)/);
        expect(retryDelayMs(err)).to.be.greaterThan(0);
      }
      expect(accepted).to.be.at.least(24);
      expect(await eventCount(services.environment.config.databaseUrl)).to.equal(before + accepted);
    });
  });

  describe('with one command in progress at a time', () => {
    let services: RunningServices;
    let clients: Clients;
    let db: Client;

    before(async () => {
      services = await startServices({ overrides: { MAX_PENDING_COMMANDS: '1', MAX_QUEUED_COMMANDS: '1000' } });
      ({ clients } = services);
      db = new Client({ connectionString: services.environment.config.databaseUrl });
      await db.connect();
    });

    after(async () => {
      await db?.end();
      await services?.close();
    });

    /** Holds the append lock until `release`: the command in progress waits for it, the rest queue. */
    async function holdAppendLock(): Promise<() => Promise<void>> {
      await db.query('BEGIN');
      await db.query('SELECT 1 FROM event_log_head WHERE id = 1 FOR UPDATE');
      return async () => void (await db.query('COMMIT'));
    }

    async function commandWaitingForLock(): Promise<void> {
      const monitor = new Client({ connectionString: services.environment.config.databaseUrl });
      await monitor.connect();
      try {
        for (;;) {
          const { rows } = await monitor.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'crucible-command' AND wait_event_type = 'Lock'`,
          );
          if ((rows[0]?.n ?? 0) > 0) return;
        }
      } finally {
        await monitor.end();
      }
    }

    it('refuses at once, with the expected wait as its retry delay, a command that could not start before its deadline', async () => {
      const { command } = clients;
      // The first command waits for the lock: its duration (held at least 100 ms here) is the
      // service's first estimate, so 100 commands queued behind one in progress are expected to
      // take 10 s or more, well past the probe's 1 s deadline below.
      let release = await holdAppendLock();
      const first = call(command, command.submitEvaluation, submission(0), 30_000);
      await commandWaitingForLock();
      await sleep(100);
      await release();
      await first;

      // One in progress, held again; 100 queued behind it, each expected to take about as long.
      release = await holdAppendLock();
      const held = call(command, command.submitEvaluation, submission(1), 30_000);
      await commandWaitingForLock();
      const queued = Array.from({ length: 100 }, (_, i) =>
        call(command, command.submitEvaluation, submission(2 + i), 30_000),
      );
      // A deadline the refusal beats by far even on a loaded machine (the 100 queued calls reach
      // the service first), and the expected wait outlasts by far.
      const err = await call(command, command.submitEvaluation, submission(-1), 1_000).then(
        () => undefined,
        (e: unknown) => e as ServiceError,
      );
      await release();
      const rest = await Promise.allSettled([held, ...queued]);

      // UNAVAILABLE, not DEADLINE_EXCEEDED: the service refused it before its deadline came.
      expect(err?.code, err?.message ?? 'accepted').to.equal(status.UNAVAILABLE);
      expect(err!.details).to.match(
        /100 commands are waiting ahead of this one, about \d+ ms, past the call's deadline/,
      );
      expect(retryDelayMs(err!)).to.be.greaterThan(1_000);
      expect(rest.filter((r) => r.status === 'rejected')).to.deep.equal([]);
    });
  });
});
