import { expect } from 'chai';
import {
  DEFAULT_RESTART_POLICY,
  restartDelayMs,
  startChild,
  startListening,
  supervise,
  type Child,
  type RestartPolicy,
} from '../../../tools/process';

/** `node -e <script>`: real child processes, a few milliseconds each. */
function node(script: string): { command: string; args: string[]; cwd: string } {
  return { command: process.execPath, args: ['-e', script], cwd: process.cwd() };
}

const LISTENS_THEN_EXITS = (code: number, afterMs: number): string =>
  `console.log(JSON.stringify({ msg: 'listening', port: 4242 })); setTimeout(() => process.exit(${code}), ${afterMs});`;
const LISTENS_FOREVER = `console.log(JSON.stringify({ msg: 'listening', port: 4242 })); setInterval(() => {}, 1000);`;

/** Resolves with the n-th child a supervisor started (1 = the first start). */
function startsOf(): { onStarted(child: Child): void; nth(n: number): Promise<Child> } {
  const started: Child[] = [];
  const waiting: { n: number; resolve: (c: Child) => void }[] = [];
  return {
    onStarted(child) {
      started.push(child);
      for (const w of waiting.filter((w) => w.n <= started.length)) w.resolve(started[w.n - 1] as Child);
    },
    nth(n) {
      const child = started[n - 1];
      return child !== undefined ? Promise.resolve(child) : new Promise((resolve) => waiting.push({ n, resolve }));
    },
  };
}

describe('tools/process: children, ready lines and restarts', function () {
  this.timeout(20_000);

  it('backs off from 0.5 s, doubling to 30 s', () => {
    const delays = [1, 2, 3, 4, 5, 6, 7, 8, 50].map((n) => restartDelayMs(DEFAULT_RESTART_POLICY, n));
    expect(delays).to.deep.equal([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    expect(DEFAULT_RESTART_POLICY.resetAfterMs).to.equal(60_000);
  });

  it('resolves with the port of the ready line, and names the output of a child that exits before it', async () => {
    const { child, port } = await startListening('listener', node(LISTENS_FOREVER), 10_000);
    expect(port).to.equal(4242);
    const status = await child.stop('SIGTERM', 5_000);
    expect(status.signal).to.equal('SIGTERM');

    let error: unknown;
    try {
      await startListening('broken', node(`console.error('no config'); process.exit(2);`), 10_000);
    } catch (err) {
      error = err;
    }
    expect(String(error))
      .to.match(/broken exited with code 2 before listening/)
      .and.to.include('no config');
  });

  it('stops a child that ignores SIGTERM with SIGKILL after the grace period', async () => {
    let ready: () => void = () => undefined;
    const readyLine = new Promise<void>((resolve) => (ready = resolve));
    const child = await startChild({
      ...node(`process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000);`),
      output: 'capture',
      onLine: (line) => line === 'ready' && ready(),
    });
    await readyLine;
    const status = await child.stop('SIGTERM', 200);
    expect(status.signal).to.equal('SIGKILL');
  });

  it('restarts a child that exits on its own, saying why and when, until it is stopped', async () => {
    const policy: RestartPolicy = { initialDelayMs: 100, maxDelayMs: 200, resetAfterMs: 60_000 };
    const lines: string[] = [];
    const starts = startsOf();
    const supervised = await supervise({
      name: 'flaky service',
      start: async () => (await startListening('flaky service', node(LISTENS_THEN_EXITS(3, 10)), 10_000)).child,
      policy,
      log: (line) => lines.push(line),
      onStarted: starts.onStarted,
    });
    const fourth = await starts.nth(4);
    await supervised.stop('SIGTERM', 5_000);
    await fourth.exited;
    const scheduled = lines.filter((l) => l.includes('restarting in'));
    expect(scheduled[0]).to.match(
      /^flaky service exited with code 3 after \d+\.\ds; restarting in 0\.1s \(restart 1\)$/,
    );
    // Doubling while it keeps failing, capped by the policy.
    expect(scheduled.slice(1, 3).map((l) => /in ([\d.]+s \(restart \d\))/.exec(l)?.[1])).to.deep.equal([
      '0.2s (restart 2)',
      '0.2s (restart 3)',
    ]);
    expect(lines.filter((l) => /^flaky service restarted \(pid \d+\)$/.test(l))).to.have.length(3);
    // Stopped means stopped: a restart would be logged and counted.
    const restarts = supervised.restarts;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(supervised.restarts).to.equal(restarts);
    expect(supervised.current).to.equal(undefined);
  });

  it('starts the back-off over once a child has run for the reset period', async () => {
    let now = 0;
    let runs = 0;
    const policy: RestartPolicy = { initialDelayMs: 100, maxDelayMs: 10_000, resetAfterMs: 1_000 };
    const lines: string[] = [];
    const starts = startsOf();
    const supervised = await supervise({
      name: 'svc',
      start: async () => {
        const { child } = await startListening('svc', node(LISTENS_THEN_EXITS(1, 5)), 10_000);
        const run = (runs += 1);
        // The third run lasts 2 s by the supervisor's clock: longer than the reset period.
        void child.exited.then(() => {
          if (run === 3) now += 2_000;
        });
        return child;
      },
      policy,
      log: (line) => lines.push(line),
      onStarted: starts.onStarted,
      clock: () => now,
    });
    await starts.nth(5);
    await supervised.stop('SIGKILL', 0);
    const delays = lines.filter((l) => l.includes('restarting in')).map((l) => /restarting in ([\d.]+s)/.exec(l)?.[1]);
    expect(delays.slice(0, 4), lines.join('\n')).to.deep.equal(['0.1s', '0.2s', '0.1s', '0.2s']);
  });
});
