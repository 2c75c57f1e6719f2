import { expect } from 'chai';
import type { Pool } from 'pg';
import { createPostgresEvaluationStore } from '../../../services/command/postgres/evaluation-store';
import type { EvaluationStore } from '../../../services/command/application/ports';
import { validateSubmit } from '../../../services/command/domain';
import { SubmitEvaluationRequest } from '../../../shared/generated/crucible/storage/v1/command_service';
import { asLogin, createPool } from '../../../shared/postgres';
import { createHarness, type Harness } from './harness';

/**
 * Batched loads (services/command/postgres/batch-load.ts) as the command service's own login
 * reads them, under row-level security: loads made in one turn go as one batch, one statement
 * per tenant, and each member gets exactly its own evaluation and request id, as its tenant
 * sees them.
 */
describe('command store: batched loads', function () {
  this.timeout(60_000);
  let h: Harness;
  let pool: Pool;
  let store: EvaluationStore;

  /** Submits as the service does, through its own login (the owner would see past row-level security). */
  async function submit(evalId: string, tenant: string, requestId?: string): Promise<string> {
    const command = validateSubmit(
      SubmitEvaluationRequest.fromPartial({
        evalId,
        code: `print(${JSON.stringify(evalId)})`,
        language: 'python',
        engine: 'docker',
        timeoutSeconds: 30,
        requestId: requestId ?? '',
      }),
      h.env.config.limits,
    );
    return (await h.executorWith({ store }).execute(command, { tenant })).position;
  }

  before(async () => {
    h = await createHarness();
    pool = createPool({
      url: asLogin(h.env.config.databaseUrl, 'crucible_command'),
      applicationName: 'crucible-batch-load-it',
      poolSize: 4,
    });
    store = createPostgresEvaluationStore(pool);
    await submit('bl-a1', 'acme');
    await submit('bl-a2', 'acme', 'bl-req-a2');
    await submit('bl-a3', 'acme', 'bl-shared');
    await submit('bl-g1', 'globex', 'bl-shared');
  });

  after(async () => {
    await pool?.end();
    await h?.close();
  });

  it('gives each load of one turn its own evaluation and request id, as its own tenant sees them', async () => {
    // All in one turn: one batch, with several ids for acme (one statement) and one for globex.
    const loads = await Promise.all([
      store.load('bl-a1', undefined, 'acme'),
      store.load('bl-a2', 'bl-req-a2', 'acme'),
      store.load('bl-g1', undefined, 'acme'),
      store.load(undefined, 'bl-shared', 'acme'),
      store.load('bl-g1', 'bl-shared', 'globex'),
      store.load('bl-a1', undefined, 'acme'),
      store.load('bl-nobody', 'bl-no-request', 'acme'),
      store.load('bl-a1', undefined, 'globex'),
    ]);
    const [a1, a2, g1AsAcme, sharedAsAcme, g1AsGlobex, a1Again, nobody, a1AsGlobex] = loads;

    expect(a1?.snapshot?.evalId).to.equal('bl-a1');
    expect(a1?.snapshot?.revision).to.equal('1');
    expect(a1?.priorRequest).to.equal(undefined);
    expect(a2?.snapshot?.evalId).to.equal('bl-a2');
    expect(a2?.priorRequest?.evalId).to.equal('bl-a2');
    expect(a1Again).to.deep.equal(a1);
    // Another tenant's evaluation is not there; its request id is its own.
    expect(g1AsAcme).to.deep.equal({});
    expect(sharedAsAcme?.snapshot).to.equal(undefined);
    expect(sharedAsAcme?.priorRequest?.evalId).to.equal('bl-a3');
    expect(g1AsGlobex?.snapshot?.evalId).to.equal('bl-g1');
    expect(g1AsGlobex?.priorRequest?.evalId).to.equal('bl-g1');
    expect(a1AsGlobex).to.deep.equal({});
    expect(nobody).to.deep.equal({});
  });

  it('answers a lone load the same as one in a batch', async () => {
    const alone = await store.load('bl-a2', 'bl-req-a2', 'acme');
    const [batched] = await Promise.all([
      store.load('bl-a2', 'bl-req-a2', 'acme'),
      store.load('bl-a1', undefined, 'acme'),
      store.load('bl-a3', undefined, 'acme'),
    ]);
    expect(batched).to.deep.equal(alone);
  });
});
