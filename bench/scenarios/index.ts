import type { Scenario } from '../support/scenario';
import { auth } from './auth';
import { bytes } from './bytes';
import { commands } from './commands';
import { fanout } from './fanout';
import { getEvaluation } from './get-evaluation';
import { idleStreams } from './idle-streams';
import { liveLogs } from './live-logs';
import { metrics } from './metrics';
import { output } from './output';
import { propagation } from './propagation';
import { rebuild } from './rebuild';
import { redisMemory } from './redis-memory';
import { retention } from './retention';
import { scaleOut } from './scale-out';

/** Every scenario, in the order a run measures them. */
export const SCENARIOS: readonly Scenario[] = [
  getEvaluation,
  commands,
  auth,
  metrics,
  propagation,
  fanout,
  idleStreams,
  rebuild,
  output,
  bytes,
  liveLogs,
  redisMemory,
  retention,
  scaleOut,
];
