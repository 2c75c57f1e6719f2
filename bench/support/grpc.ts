import {
  credentials,
  Metadata,
  type CallOptions,
  type ChannelOptions,
  type Client,
  type ServiceError,
} from '@grpc/grpc-js';

type Callback<Res> = (err: ServiceError | null, response: Res) => void;

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: Callback<Res>,
) => unknown;

/**
 * Calls a generated client's unary method: `await unary(client, client.getEvaluation, request)`.
 * Measured calls go without a deadline: a deadline is a timer per call, client CPU that
 * competes with the server on a 2-core machine (closedLoop has its own watchdog).
 */
export function unary<Req, Res>(
  client: Client,
  method: UnaryMethod<Req, Res>,
  request: Req,
  deadlineMs?: number,
): Promise<Res> {
  const options = deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
  return new Promise((resolve, reject) => {
    method.call(client, request, new Metadata(), options, (err, response) =>
      err === null ? resolve(response) : reject(err),
    );
  });
}

/** Deadline of set-up calls (seeding, reading back): long, but a stuck service fails the scenario. */
export const SETUP_DEADLINE_MS = 30_000;

/** Big enough for the largest output the bench sends and reads back. */
export const LARGE_MESSAGES: ChannelOptions = {
  'grpc.max_send_message_length': -1,
  'grpc.max_receive_message_length': -1,
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
};

type ClientConstructor<C> = new (
  address: string,
  creds: ReturnType<typeof credentials.createInsecure>,
  options?: ChannelOptions,
) => C;

/**
 * `count` clients, each on its own HTTP/2 connection (a local subchannel pool per client:
 * grpc-js otherwise shares one connection among clients with equal options).
 */
export function createClients<C extends Client>(
  Ctor: ClientConstructor<C>,
  address: string,
  count: number,
  options: ChannelOptions = {},
): C[] {
  return Array.from(
    { length: count },
    () => new Ctor(address, credentials.createInsecure(), { ...options, 'grpc.use_local_subchannel_pool': 1 }),
  );
}

export function closeAll(clients: readonly Client[]): void {
  for (const client of clients) client.close();
}
