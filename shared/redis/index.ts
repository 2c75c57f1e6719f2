export { asRedisUser, deleteRedisUsers, serviceRedisUsers, setRedisUsers } from './acl';
export type { RedisUser } from './acl';
export { enableKeyspaceEvents, KEYSPACE_EVENT_FLAGS } from './keyspace-events';
export {
  createRedisClient,
  isCluster,
  onEveryNode,
  onEveryPrimary,
  primariesOf,
  redisTargetOf,
  scanKeys,
  type RedisClient,
  type RedisTarget,
} from './connect';
