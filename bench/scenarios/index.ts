import type { Scenario } from '../support/scenario';
import { getEvaluation } from './get-evaluation';

/** Every scenario, in the order a run measures them. */
export const SCENARIOS: readonly Scenario[] = [getEvaluation];
