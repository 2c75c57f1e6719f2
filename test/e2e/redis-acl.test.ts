import { expect } from 'chai';
import { EvaluationStatus, ExecutorStatus } from '../../shared/generated/crucible/storage/v1/evaluation';
import {
  asRedisUser,
  createRedisClient,
  deleteRedisUsers,
  enableKeyspaceEvents,
  onEveryNode,
  redisTargetOf,
  serviceRedisUsers,
  setRedisUsers,
  type RedisClient,
  type RedisTarget,
  type RedisUser,
} from '../../shared/redis';
import { call, createClients, readStream, type Clients } from '../support/clients';
import { aSubmission } from '../support/requests';
import { createTestEnvironment, type TestEnvironment } from '../support/environment';
import { startService, waitForServing, type RunningService } from '../support/processes';
import { COMMAND_SERVICE, QUERY_SERVICE } from '../support/services';
import type { WatchEvaluationResponse } from '../../shared/generated/crucible/storage/v1/query_service';

/** The error a command gets as `user` (undefined when it ran). */
async function refusalAs(
  target: RedisTarget,
  user: RedisUser,
  ...command: [string, ...(string | number)[]]
): Promise<string | undefined> {
  const redis = createRedisClient(
    { ...target, url: asRedisUser(target.url, user) },
    { lazyConnect: true, maxRetriesPerRequest: 0 },
  );
  try {
    await redis.connect();
    await redis.call(...command);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    redis.disconnect();
  }
}

/**
 * Both services as processes, each as its Redis ACL user of least privilege (as `make up` runs
 * them): everything they do works, and Redis itself refuses each what it has no business with.
 */
describe('e2e: each service as its Redis ACL user', function () {
  this.timeout(60_000);
  let environment: TestEnvironment;
  let admin: RedisClient;
  let users: ReturnType<typeof serviceRedisUsers>;
  let command: RunningService | undefined;
  let query: RunningService | undefined;
  let clients: Clients | undefined;

  before(async () => {
    environment = await createTestEnvironment();
    admin = createRedisClient(redisTargetOf(environment.config));
    users = serviceRedisUsers(environment.config.redisKeyPrefix);
    // On every node of a cluster: each keeps its own users and configuration.
    await onEveryNode(admin, (node) => setRedisUsers(node, [users.command, users.query]));
    // What the query service's user may not do itself, as make up does it.
    await onEveryNode(admin, enableKeyspaceEvents);
    const url = environment.config.redisUrl;
    command = await startService('command', { ...environment.env, REDIS_URL: asRedisUser(url, users.command) });
    query = await startService('query', { ...environment.env, REDIS_URL: asRedisUser(url, users.query) });
    await waitForServing(query.address, QUERY_SERVICE);
    await waitForServing(command.address, COMMAND_SERVICE);
    clients = createClients(command.address, query.address);
  });

  after(async () => {
    clients?.close();
    await query?.stop();
    await command?.stop();
    if (users !== undefined) await onEveryNode(admin, (node) => deleteRedisUsers(node, [users.command, users.query]));
    admin?.disconnect();
    await environment?.close();
  });

  it('serves a lifecycle, its watchers, lists and executor health', async () => {
    const { command: c, query: q } = clients as Clients;
    const { evalId, position } = await call(c, c.submitEvaluation, aSubmission());
    await call(q, q.getEvaluation, { evalId, minPosition: position });
    const watch = readStream<WatchEvaluationResponse>(q.watchEvaluation({ evalId, afterRevision: '1' }));
    try {
      await call(c, c.startEvaluation, { evalId, executorId: 'x-1', containerId: 'c-1', requestId: '' });
      await call(c, c.reportExecutorHealth, {
        executorId: 'x-1',
        status: ExecutorStatus.EXECUTOR_STATUS_HEALTHY,
        capacity: 2,
        running: 1,
        version: 'v',
        metrics: {},
      });
      const done = await call(c, c.completeEvaluation, {
        evalId,
        output: Buffer.from('ok'),
        exitCode: 0,
        requestId: '',
      });
      let message = await watch.next();
      while (message.update?.evaluation?.status !== EvaluationStatus.EVALUATION_STATUS_COMPLETED)
        message = await watch.next();
      const listed = await call(q, q.listEvaluations, {
        status: EvaluationStatus.EVALUATION_STATUS_COMPLETED,
        pageSize: 10,
        pageToken: '',
        minPosition: done.position,
      });
      expect(listed.evaluations.map((e) => e.evalId)).to.deep.equal([evalId]);
      const executors = await call(q, q.listExecutors, {});
      expect(executors.executors.map((e) => e.executorId)).to.deep.equal(['x-1']);
      // Nothing either did was refused on the way (a degraded path would say NOPERM in its log).
      expect(`${command?.logs() ?? ''}${query?.logs() ?? ''}`).not.to.match(/NOPERM|no permissions/i);
    } finally {
      watch.cancel();
    }
  });

  it("refuses the command service's user every read model, other channels, and admin commands", async () => {
    const target = redisTargetOf(environment.config);
    const prefix = environment.config.redisKeyPrefix;
    for (const command of [
      // Commands it may run, on keys and channels it may not touch: the key and channel rules refuse them.
      ['SET', `${prefix}:{${prefix}:0}:eval:x`, 'v'],
      ['ZADD', `${prefix}:{${prefix}:0}:index:default/all`, '0', 'm'],
      ['SPUBLISH', 'other:{other:0}:changed', 'x'],
      // Commands it may not run at all.
      ['GET', `${prefix}:{${prefix}:0}:eval:x`],
      ['HGETALL', `${prefix}:anything`],
      ['PUBLISH', 'other:changes', 'x'],
      ['FLUSHALL'],
      ['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru'],
      ['KEYS', '*'],
    ] as [string, ...string[]][]) {
      expect(await refusalAs(target, users.command, ...command), command.join(' ')).to.match(/NOPERM/);
    }
  });

  it("refuses the query service's user other deployments' keys and channels, and dangerous or admin commands", async () => {
    const target = redisTargetOf(environment.config);
    for (const command of [
      ['GET', 'another-deployment:p0:evaluation:x'],
      ['PUBLISH', 'another-deployment:changes', 'x'],
      ['SPUBLISH', 'another-deployment:{another-deployment:0}:changed', 'x'],
      ['FLUSHALL'],
      ['FLUSHDB'],
      ['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru'],
      ['KEYS', '*'],
      ['ACL', 'LIST'],
      ['SHUTDOWN'],
    ] as [string, ...string[]][]) {
      expect(await refusalAs(target, users.query, ...command), command.join(' ')).to.match(/NOPERM/);
    }
  });
});
