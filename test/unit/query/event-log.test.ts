import { expect } from 'chai';
import { types } from 'pg';
import { isoTimestamp } from '../../../services/query/postgres/event-log';

describe('isoTimestamp (recorded_at of the event log)', () => {
  const parse = types.getTypeParser(types.builtins.TIMESTAMPTZ) as (text: string) => Date;

  it("is what pg's own parser and toISOString make of any timestamptz text", () => {
    const texts = [
      '2026-01-01 00:00:01+00',
      '2026-01-01 00:00:01.001+00',
      '1999-12-31 23:59:59.999999+00',
      '2026-02-28 12:34:56.5+00',
      '2024-02-29 00:00:00.000001+00',
      '0099-01-01 00:00:00+00',
      '2026-01-01 00:00:01.001+02',
      '2026-01-01 00:00:01.001-03:30',
      '2026-01-01 00:00:01.001+00 BC',
    ];
    for (let digits = 1; digits <= 6; digits += 1) {
      for (let i = 0; i < 10 ** digits; i += digits < 4 ? 1 : 7) {
        texts.push(`2026-07-15 08:09:10.${String(i).padStart(digits, '0')}+00`);
      }
    }
    for (const text of texts) expect(isoTimestamp(text), text).to.equal(parse(text).toISOString());
  });
});
