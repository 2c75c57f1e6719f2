import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Server, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import {
  DEFAULT_CONNECTION_IDLE_MS,
  DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT,
  DEFAULT_REQUEST_READ_TIMEOUT_MS,
} from '../config/settings';
import type { Logger } from '../logging';
import type { ServerAccess } from './access';
import type { Calls } from './handlers';
import { measuredDefinition } from './admission';
import { guardCalls } from './guard';
import { createByteBudget, type ByteBudget } from './byte-budget';
import { tolerantDefinition } from './malformed';

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
  /**
   * Request bytes held at once (MAX_REQUEST_BYTES_IN_FLIGHT, grpc/admission.ts); the setting's
   * default when not given (the query service: its requests are at most 1 MiB).
   */
  readonly maxRequestBytesInFlight?: number;
  /** How long a request message may take to arrive once read (REQUEST_READ_TIMEOUT_MS; its default when not given). */
  readonly requestReadTimeoutMs?: number;
  /** How long a connection may go without a call before it is closed (CONNECTION_IDLE_MS; its default when not given). */
  readonly connectionIdleMs?: number;
  /** Health status every service starts with; the query side starts NOT_SERVING until caught up. */
  readonly initialStatus: ServingStatus;
  /** The transport it listens with, and whether it serves reflection. */
  readonly access: Pick<ServerAccess, 'credentials' | 'reflection'>;
  /** What its handlers' calls go through (handlers.ts): its interceptor authenticates every call first. */
  readonly calls: Calls;
}

export interface GrpcServer {
  /** Binds host:port (port 0 picks a free one) and resolves the bound port. */
  listen(host: string, port: number): Promise<number>;
  /** Sets the health of "" and of every registered service. */
  setServing(serving: boolean): void;
  /**
   * Stops accepting calls, lets in-flight unary calls finish for up to `graceMs`, then cancels
   * what is left. Long-lived streams should be ended with UNAVAILABLE before (the query service
   * signals its handlers, which end their streams naming the position to resume from).
   */
  shutdown(graceMs: number): Promise<void>;
  /** The request bytes held now and at most so far, and the calls waiting to be read. */
  readonly admission: Pick<ByteBudget, 'reserved' | 'peakReserved' | 'waiting'>;
}

/** The descriptor set `npm run generate` writes next to the generated code (buf build). */
const DESCRIPTOR_SET_PATH = join(__dirname, '..', '..', '..', 'shared', 'generated', 'crucible.binpb');

/**
 * Reflection input holding the original files of the descriptor set. proto-loader's package
 * definitions regroup symbols into one file per package and drop imports of well-known types
 * (google/protobuf/struct.proto ...), so `buf curl` cannot resolve the schema from them;
 * @grpc/reflection only reads `fileDescriptorProtos`, so we hand it the files as protoc/buf
 * wrote them.
 */
function reflectionInput(): PackageDefinition {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(DESCRIPTOR_SET_PATH));
  const fileDescriptorProtos = set.file.map((file) => Buffer.from(toBinary(FileDescriptorProtoSchema, file)));
  return { files: { fileDescriptorProtos } } as unknown as PackageDefinition;
}

/**
 * A gRPC server whose every method (health and reflection too) answers a request that does not
 * decode, or a unary call without exactly one message, with INVALID_ARGUMENT (grpc/malformed.ts),
 * and reads a request only once its bytes fit in the server's budget (grpc/admission.ts).
 */
export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const budget = createByteBudget(options.maxRequestBytesInFlight ?? DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT);
  const server = new Server({
    'grpc.max_receive_message_length': options.maxReceiveMessageBytes,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_permit_without_calls': 1,
    // Each open connection holds a socket and its HTTP/2 session: without a bound, clients that
    // connect and never call (or leak their channels) add up without end.
    'grpc.max_connection_idle_ms': options.connectionIdleMs ?? DEFAULT_CONNECTION_IDLE_MS,
    // No channelz service is served, so its per-call tracking (an object and four closures on
    // every open stream) would only cost memory: docs/benchmarks.md "Lean streams".
    'grpc.enable_channelz': 0,
    interceptors: [
      guardCalls(
        {
          budget,
          maxMessageBytes: options.maxReceiveMessageBytes,
          readTimeoutMs: options.requestReadTimeoutMs ?? DEFAULT_REQUEST_READ_TIMEOUT_MS,
        },
        options.calls.admissions,
      ),
    ],
  });
  // Health and reflection add their own services: they get this server's addService only.
  const registrar = {
    addService: (definition: ServiceDefinition, implementation: UntypedServiceImplementation) =>
      server.addService(measuredDefinition(tolerantDefinition(definition)), implementation),
  };
  for (const service of options.services) registrar.addService(service.definition, service.implementation);

  const names = ['', ...options.services.map((s) => s.name)];
  const health = new HealthImplementation(Object.fromEntries(names.map((n) => [n, options.initialStatus])));
  health.addToServer(registrar);

  if (options.access.reflection) {
    const reflected = [...options.services.map((s) => s.name), 'grpc.health.v1.Health'];
    new ReflectionService(reflectionInput(), { services: reflected }).addToServer(registrar);
  }

  return {
    admission: {
      get reserved() {
        return budget.reserved;
      },
      get peakReserved() {
        return budget.peakReserved;
      },
      get waiting() {
        return budget.waiting;
      },
    },
    listen: (host, port) =>
      new Promise((resolve, reject) => {
        server.bindAsync(`${host}:${port}`, options.access.credentials, (err, boundPort) => {
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
