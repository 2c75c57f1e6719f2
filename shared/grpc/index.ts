export { createGrpcServer } from './server';
export type { GrpcServer, GrpcServerOptions, ServiceRegistration } from './server';
export { unary, serverStream } from './handlers';
export type { CallContext, UnaryHandler, ServerStreamHandler, StreamSink } from './handlers';
export { toStatus } from './status';
export type { StatusObject } from './status';
