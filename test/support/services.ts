import type { ChannelCredentials } from '@grpc/grpc-js';
import { createClients, type Clients } from './clients';
import { createTestEnvironment, type TestEnvironment, type TestEnvironmentOptions } from './environment';
import { startService, waitForServing, type RunningService } from './processes';

export const COMMAND_SERVICE = 'crucible.storage.v1.EvaluationCommandService';
export const QUERY_SERVICE = 'crucible.storage.v1.EvaluationQueryService';

/** Both services as processes on an environment of their own, serving, with clients. */
export interface RunningServices {
  readonly environment: TestEnvironment;
  readonly command: RunningService;
  readonly query: RunningService;
  readonly clients: Clients;
  /** Closes the clients, stops both services and removes the environment. */
  close(): Promise<void>;
}

/** What an e2e spec's `before` does: an environment, both services started and serving, clients. */
export async function startServices(
  options: TestEnvironmentOptions & {
    /** How to reach them (TLS, a caller's credentials); plaintext without any by default. */
    readonly channel?: ChannelCredentials;
  } = {},
): Promise<RunningServices> {
  const environment = await createTestEnvironment(options);
  const started: RunningService[] = [];
  try {
    const command = await startService('command', environment.env);
    started.push(command);
    const query = await startService('query', environment.env);
    started.push(query);
    await waitForServing(query.address, QUERY_SERVICE, undefined, options.channel);
    await waitForServing(command.address, COMMAND_SERVICE, undefined, options.channel);
    const clients = createClients(command.address, query.address, options.channel);
    return {
      environment,
      command,
      query,
      clients,
      async close() {
        clients.close();
        await query.stop();
        await command.stop();
        await environment.close();
      },
    };
  } catch (err) {
    for (const service of started.reverse()) await service.stop();
    await environment.close();
    throw err;
  }
}
