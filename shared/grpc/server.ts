import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { loadFileDescriptorSetFromBuffer } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import type { Logger } from '../logging';

export interface ServiceRegistration {
  /** Full service name, e.g. "crucible.storage.v1.EvaluationQueryService". */
  readonly name: string;
  readonly definition: ServiceDefinition;
  readonly implementation: UntypedServiceImplementation;
}

export interface GrpcServerOptions {
  readonly services: readonly ServiceRegistration[];
  readonly logger: Logger;
  /** Largest request a client may send (bytes). */
  readonly maxReceiveMessageBytes: number;
  /** Health status every service starts with; the query side starts NOT_SERVING until caught up. */
  readonly initialStatus: ServingStatus;
}

export interface GrpcServer {
  /** Binds host:port (port 0 picks a free one) and resolves the bound port. */
  listen(host: string, port: number): Promise<number>;
  /** Sets the health of "" and of every registered service. */
  setServing(serving: boolean): void;
  /**
   * Stops accepting calls, lets in-flight unary calls finish for up to `graceMs`, then cancels
   * what is left. Streams should have been ended with UNAVAILABLE before (see StreamRegistry).
   */
  shutdown(graceMs: number): Promise<void>;
}

/**
 * The descriptor set `npm run generate` writes next to the generated code. Reflection is fed
 * from it rather than from proto-loader's parse of the .proto files because only the former
 * carries well-known-type imports (google/protobuf/struct.proto ...) exactly as protoc would,
 * which `buf curl --list-methods` needs.
 */
const DESCRIPTOR_SET_PATH = join(__dirname, '..', '..', '..', 'shared', 'generated', 'crucible.binpb');

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const server = new Server({
    'grpc.max_receive_message_length': options.maxReceiveMessageBytes,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  for (const service of options.services) server.addService(service.definition, service.implementation);

  const names = ['', ...options.services.map((s) => s.name)];
  const health = new HealthImplementation(Object.fromEntries(names.map((n) => [n, options.initialStatus])));
  health.addToServer(server);

  const descriptorSet = loadFileDescriptorSetFromBuffer(readFileSync(DESCRIPTOR_SET_PATH));
  new ReflectionService(descriptorSet).addToServer(server);

  return {
    listen: (host, port) =>
      new Promise((resolve, reject) => {
        server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (err, boundPort) => {
          if (err !== null) reject(err);
          else resolve(boundPort);
        });
      }),
    setServing(serving) {
      for (const name of names) health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING');
    },
    shutdown: (graceMs) =>
      new Promise((resolve) => {
        for (const name of names) health.setStatus(name, 'NOT_SERVING');
        const timer = setTimeout(() => {
          options.logger.warn('grace period over; cancelling remaining calls', { graceMs });
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
