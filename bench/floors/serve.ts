import {
  Server,
  ServerCredentials,
  type ServerOptions,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { announceListening } from '../support/processes';

/**
 * Runs a floor as a process of its own, like the services: a bare grpc-js server on
 * 127.0.0.1:0 (no interceptors, health, reflection or logging), announced with the services'
 * `listening` line, stopped by SIGTERM. `onStop` closes what the floor opened.
 */
export function serveFloor(
  definition: ServiceDefinition,
  implementation: UntypedServiceImplementation,
  onStop: () => Promise<void> = () => Promise.resolve(),
): Server {
  return serveFloors([{ definition, implementation }], onStop);
}

/** {@link serveFloor} for several services on one server, with the server's options. */
export function serveFloors(
  services: readonly { definition: ServiceDefinition; implementation: UntypedServiceImplementation }[],
  onStop: () => Promise<void> = () => Promise.resolve(),
  options: ServerOptions = {},
): Server {
  const server = new Server(options);
  for (const { definition, implementation } of services) server.addService(definition, implementation);
  server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => {
    if (err !== null) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    announceListening(port);
  });
  process.once('SIGTERM', () => {
    server.forceShutdown();
    void onStop().finally(() => process.exit(0));
  });
  return server;
}

/** Reads a required variable of a floor process. */
export function requiredEnv(key: string): string {
  const value = process.env[key];
  if (value === undefined || value === '') {
    process.stderr.write(`${key} is required\n`);
    process.exit(2);
  }
  return value;
}
