import { connect, createServer, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a server that a test can make lose answers and cut connections at a
 * moment it chooses: how a spec puts a connection failure exactly after a write reached the
 * server (it committed, the client never heard), which no timing could do reliably.
 */
export interface TcpProxy {
  readonly port: number;
  /** From now on the server's bytes are dropped, not passed on: its answers are lost. */
  dropReplies(): void;
  /** Cuts every connection open now (both sides); later connections get their answers again. */
  cut(): void;
  /** Closes each new connection at once until `accept()`: the server cannot be reached. */
  refuse(): void;
  accept(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<{ client: Socket; upstream: Socket }>();
  let dropping = false;
  let refusing = false;
  const server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    const pair = { client, upstream };
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (data) => upstream.write(data));
    upstream.on('data', (data) => {
      if (!dropping) client.write(data);
    });
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no port');
  return {
    port: address.port,
    dropReplies: () => void (dropping = true),
    cut() {
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      dropping = false;
    },
    refuse: () => void (refusing = true),
    accept: () => void (refusing = false),
    async close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
