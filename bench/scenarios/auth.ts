import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InterceptingCall, type Interceptor } from '@grpc/grpc-js';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { EvaluationCommandServiceClient } from '../../shared/generated/crucible/storage/v1/command_service';
import { submitRequest } from '../support/evaluations';
import { closeAll, createClients, unary } from '../support/grpc';
import { closedLoop, interleave, type LoadTarget } from '../support/load';
import { loadFigures, type Row } from '../support/report';
import type { Scenario } from '../support/scenario';
import { createBenchStack, type BenchStack } from '../support/stack';

const CONCURRENCY = [1, 16];
const ISSUER = 'https://bench.crucible.test';
const AUDIENCE = 'crucible-storage-bench';

/** Adds `authorization: Bearer <token>` to every call (plaintext channels take no call credentials). */
function bearer(token: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/**
 * What authentication costs a command: SubmitEvaluation through a command service that checks
 * a JWT (ES256) and the roles table on every call, beside the same service with AUTH_MODE=none,
 * each on a database of its own, interleaved in the same run. Verified tokens are remembered
 * until they expire, so a client's calls after the first pay a map lookup, not a signature.
 */
export const auth: Scenario = {
  name: 'auth',
  description:
    'SubmitEvaluation with a JWT checked on every call (AUTH_MODE=jwt) beside the same service without authentication',
  async run(ctx) {
    const dir = await mkdtemp(join(tmpdir(), 'crucible-bench-auth-'));
    const stacks: BenchStack[] = [];
    try {
      const keys = await generateKeyPair('ES256', { extractable: true });
      const keysFile = join(dir, 'jwks.json');
      await writeFile(keysFile, JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'bench' }] }));
      const token = await new SignJWT({ roles: ['api'], tenant: 'bench' })
        .setProtectedHeader({ alg: 'ES256', kid: 'bench' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setSubject('bench-api')
        .setIssuedAt()
        .setExpirationTime('2h')
        .sign(keys.privateKey);
      const open = await createBenchStack(ctx);
      stacks.push(open);
      const checked = await createBenchStack(ctx, {
        AUTH_MODE: 'jwt',
        AUTH_JWT_KEYS_FILE: keysFile,
        AUTH_JWT_ISSUER: ISSUER,
        AUTH_JWT_AUDIENCE: AUDIENCE,
      });
      stacks.push(checked);
      const [openService, checkedService] = [await open.start('command'), await checked.start('command')];
      const [openClient] = createClients(EvaluationCommandServiceClient, openService.address, 1);
      const [checkedClient] = createClients(EvaluationCommandServiceClient, checkedService.address, 1, {
        interceptors: [bearer(token)],
      });
      const rows: Row[] = [];
      for (const concurrency of CONCURRENCY) {
        const target = (name: string, client: EvaluationCommandServiceClient): LoadTarget => ({
          name,
          run: () =>
            closedLoop({
              concurrency,
              warmupMs: ctx.load.warmupMs,
              durationMs: ctx.load.durationMs,
              op: (worker, iteration) =>
                unary(client, client.submitEvaluation, submitRequest(worker * 1_000_000 + iteration)),
            }),
        });
        const results = await interleave(
          [target('AUTH_MODE=jwt', checkedClient!), target('AUTH_MODE=none', openClient!)],
          ctx.load.rounds,
          (name, round) => ctx.progress(`auth: c=${concurrency} round ${round + 1}/${ctx.load.rounds}: ${name}`),
        );
        const withJwt = results.get('AUTH_MODE=jwt')!;
        const without = results.get('AUTH_MODE=none')!;
        rows.push({
          scenario: 'SubmitEvaluation, every call authenticated',
          case: `c=${concurrency}`,
          subject: loadFigures('command service, AUTH_MODE=jwt', withJwt, 'cmd/s'),
          floors: [loadFigures('the same, AUTH_MODE=none', without, 'cmd/s')],
          ratio: withJwt.rate / without.rate,
        });
      }
      closeAll([openClient!, checkedClient!]);
      const worst = rows.reduce((a, b) => ((b.ratio ?? Infinity) < (a.ratio ?? Infinity) ? b : a));
      return {
        rows,
        checks: [
          {
            target: 'Authenticated commands ≥ 0.9× unauthenticated ones at every concurrency',
            actual: `lowest ${worst.ratio?.toFixed(3)}× (${worst.case})`,
            met: rows.every((r) => (r.ratio ?? 0) >= 0.9),
          },
        ],
        notes: [],
      };
    } finally {
      for (const stack of stacks.reverse()) await stack.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
