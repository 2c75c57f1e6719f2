import { expect } from 'chai';
import { silentLogger } from '../../../shared/logging';
import type { ListFilter } from '../../../services/query/read-models/evaluation-list';
import { createKeyLayout } from '../../../services/query/read-models/keys';
import { createEvaluationList } from '../../../services/query/redis/evaluation-list';
import { createEvaluationRecords } from '../../../services/query/redis/evaluation-records';
import { createUndecodableEntries } from '../../../services/query/redis/undecodable-entries';
import { createQueryHarness, type QueryHarness } from './harness';

const ALL: ListFilter = { tenant: 'default', statuses: [], facets: [], order: 'newest' };

for (const partitions of ['1', '3']) {
  describe(`list pages are bounded in bytes as well as count (${partitions} partition(s))`, function () {
    this.timeout(60_000);
    let h: QueryHarness;

    before(async () => {
      h = await createQueryHarness({ READ_MODEL_PARTITIONS: partitions });
      for (let i = 0; i < 30; i += 1)
        await h.writer.submit(`wide-${String(i).padStart(2, '0')}`, { metadata: { blob: 'x'.repeat(1000 + i) } });
      const replica = await h.startReplica();
      await replica.service.projector.whenCaughtUp();
      await replica.close();
    });
    after(async () => {
      await h.close();
    });

    it('stops a page at the byte budget (at least one record), and the next pages carry on without a gap or a repeat', async () => {
      const layout = createKeyLayout(h.config.redisKeyPrefix, Number(partitions));
      const records = createEvaluationRecords(h.redis, layout, createUndecodableEntries(silentLogger));
      const budget = 3_500; // about three records of ~1.1 kB
      const list = createEvaluationList(h.redis, layout, records, budget);
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let pages = 0; pages < 100; pages += 1) {
        const page = await list.page(ALL, 50, cursor);
        const bytes = page.evaluations.reduce((sum, e) => sum + e.bytes.length, 0);
        expect(page.evaluations.length).to.be.at.least(1);
        if (page.evaluations.length > 1) expect(bytes).to.be.at.most(budget);
        seen.push(...page.evaluations.map((e) => e.message.evalId));
        if (page.next === undefined) break;
        cursor = page.next;
      }
      expect(seen).to.have.length(30);
      expect(new Set(seen).size).to.equal(30);
      // One record larger than the budget still goes, alone.
      const tiny = createEvaluationList(h.redis, layout, records, 10);
      const first = await tiny.page(ALL, 50, undefined);
      expect(first.evaluations).to.have.length(1);
      expect(first.next).to.not.equal(undefined);
    });
  });
}
