import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { changeChannel } from '../changes';
import { executorKeys } from '../executors';

/**
 * The Redis ACL users of least privilege (docs/security.md), for a deployment whose keys and
 * channels start with `prefix`:
 *
 * - the command service publishes on its change channel and keeps executor health (its only
 *   keys); it can read no read model and run nothing else;
 * - the query service runs what its read models need, on its prefix's keys and channels and the
 *   keyspace events it follows, without the dangerous and admin commands (it reads the
 *   configuration; it cannot change it, nor flush, nor list keys).
 *
 * `make up` sets them on the Redis it runs; on a managed Redis, create them with these rules.
 */
export interface RedisUser {
  readonly name: string;
  readonly password: string;
  readonly rules: readonly string[];
}

/**
 * What any client of ours sends on connecting (ioredis: HELLO/AUTH, CLIENT SETNAME, SELECT, the
 * INFO of its ready check; on a cluster, CLUSTER SLOTS for the topology, CLUSTER INFO for its
 * state and ASKING while a slot migrates). Not CLIENT SETINFO: Redis 7.0 knows no such command (ioredis ignores its refusal on 7.2+).
 */
const CONNECTING = [
  '+hello',
  '+auth',
  '+ping',
  '+select',
  '+info',
  '+client|setname',
  '+cluster|slots',
  '+cluster|info',
  // Sent before a command retried on the node an -ASK names (a slot being migrated).
  '+asking',
];

export function serviceRedisUsers(
  prefix: string,
  passwords: { readonly command: string; readonly query: string } = {
    command: randomBytes(24).toString('hex'),
    query: randomBytes(24).toString('hex'),
  },
): { readonly command: RedisUser; readonly query: RedisUser } {
  return {
    command: {
      name: `${prefix}-command`,
      password: passwords.command,
      rules: [
        `~${executorKeys(prefix).pattern}`,
        // Every partition's channel (shared/changes), whatever READ_MODEL_PARTITIONS is.
        `&${changeChannel(prefix, '*')}`,
        '-@all',
        ...CONNECTING,
        '+spublish',
        '+multi',
        '+exec',
        '+discard',
        '+set',
        '+zadd',
        '+zremrangebyscore',
        '+zmscore',
      ],
    },
    query: {
      name: `${prefix}-query`,
      password: passwords.query,
      rules: [
        `~${prefix}:*`,
        `&${prefix}:*`,
        '&__keyevent@*__:*',
        '+@all',
        '-@dangerous',
        '-@admin',
        ...CONNECTING,
        '+client|id',
        '+client|unblock',
        '+config|get',
      ],
    },
  };
}

/** Creates or replaces `users` on the Redis `admin` is connected to, as a user that may (the default one). */
export async function setRedisUsers(admin: Redis, users: readonly RedisUser[]): Promise<void> {
  for (const user of users) {
    await admin.call('ACL', 'SETUSER', user.name, 'reset', 'on', `>${user.password}`, 'resetchannels', ...user.rules);
  }
}

export async function deleteRedisUsers(admin: Redis, users: readonly RedisUser[]): Promise<void> {
  await admin.call('ACL', 'DELUSER', ...users.map((u) => u.name));
}

/** `url` as `user`. */
export function asRedisUser(url: string, user: RedisUser): string {
  const parsed = new URL(url);
  parsed.username = user.name;
  parsed.password = user.password;
  return parsed.toString();
}
