export { createGrpcServer } from './server';
export type { GrpcServer, GrpcServerOptions, ServiceRegistration } from './server';
export { unary, serverStream, clientStream, createCalls } from './handlers';
export type {
  Calls,
  CallContext,
  UnaryHandler,
  ServerStreamHandler,
  ClientStreamHandler,
  StreamSink,
} from './handlers';
export { toStatus } from './status';
export { createCallLog } from './call-log';
export type { CallLog } from './call-log';
export type { StatusObject } from './status';
export { createServerAccess, openAccess, serverCredentialsOf } from './access';
export type { ServerAccess } from './access';
export { createRpcMetrics, NO_RPC_METRICS } from './rpc-metrics';
export type { RpcMetrics } from './rpc-metrics';
