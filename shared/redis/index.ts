export { asRedisUser, deleteRedisUsers, serviceRedisUsers, setRedisUsers } from './acl';
export type { RedisUser } from './acl';
export { enableKeyspaceEvents, KEYSPACE_EVENT_FLAGS } from './keyspace-events';
