import { expect } from 'chai';
import { ResourceExhaustedError } from '../../../shared/errors';
import { createOpenCalls } from '../../../services/query/live/open-calls';

describe('open calls (streams and min_position waits) under caps', () => {
  it('refuses past the per-connection cap, and again after a release only when full', () => {
    const calls = createOpenCalls({ maxOpen: 10, maxOpenPerConnection: 2 });
    const a1 = calls.open('a', 'a stream');
    calls.open('a', 'a stream');
    expect(() => calls.open('a', 'a stream'))
      .to.throw(ResourceExhaustedError)
      .with.property('message')
      .that.contains('MAX_STREAMS_PER_CONNECTION');
    calls.open('b', 'a stream'); // another connection has its own share
    a1();
    a1(); // a second release changes nothing
    calls.open('a', 'a stream');
    expect(calls.count).to.equal(3);
  });

  it('refuses past the cap in all, whichever connection asks', () => {
    const calls = createOpenCalls({ maxOpen: 2, maxOpenPerConnection: 10 });
    calls.open('a', 'x');
    const b = calls.open('b', 'x');
    expect(() => calls.open('c', 'x')).to.throw(ResourceExhaustedError, /MAX_STREAMS\)/);
    b();
    calls.open('c', 'x');
  });
});
