import type { Scenario } from '../support/scenario';

/** Every scenario, in the order a run measures them. */
export const SCENARIOS: readonly Scenario[] = [];
