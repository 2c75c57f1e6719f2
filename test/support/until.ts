/**
 * Repeats `probe` until it returns true, or fails after `timeoutMs`. For conditions no event
 * announces (e.g. "that backend now waits on a lock"); each probe is a round trip, not a sleep.
 */
export async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
  }
}
