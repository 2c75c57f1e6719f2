import { CreateEvaluations1763877600000 } from './1763877600000-CreateEvaluations';
import { CreateEventLog1763877600001 } from './1763877600001-CreateEventLog';
import { CreateEvaluationBodies1763877600002 } from './1763877600002-CreateEvaluationBodies';
import { CreateEvaluationMetrics1763877600003 } from './1763877600003-CreateEvaluationMetrics';
import { CreateSecurityAudit1763877600004 } from './1763877600004-CreateSecurityAudit';
import { CreateSecurityEvents1763877600005 } from './1763877600005-CreateSecurityEvents';
import { CreateReaderRole1763877600006 } from './1763877600006-CreateReaderRole';
import { EventDataBytes1763877600007 } from './1763877600007-EventDataBytes';
import { MetricSeries1763877600008 } from './1763877600008-MetricSeries';
import { SecurityTrail1763877600009 } from './1763877600009-SecurityTrail';
import { CodeAsBody1763877600010 } from './1763877600010-CodeAsBody';
import { LiveLogs1763877600011 } from './1763877600011-LiveLogs';
import { BlobHomes1763877600012 } from './1763877600012-BlobHomes';
import { OutputUploads1763877600013 } from './1763877600013-OutputUploads';
import { Lz4Bodies1763877600014 } from './1763877600014-Lz4Bodies';
import { EventReporters1763877600015 } from './1763877600015-EventReporters';
import { ServiceRoles1763877600016 } from './1763877600016-ServiceRoles';
import { TenantRows1763877600017 } from './1763877600017-TenantRows';
import { Retention1763877600018 } from './1763877600018-Retention';

/** Every migration, in order. TypeORM records applied ones in the `migrations` table. */
export const MIGRATIONS = [
  CreateEvaluations1763877600000,
  CreateEventLog1763877600001,
  CreateEvaluationBodies1763877600002,
  CreateEvaluationMetrics1763877600003,
  CreateSecurityAudit1763877600004,
  CreateSecurityEvents1763877600005,
  CreateReaderRole1763877600006,
  EventDataBytes1763877600007,
  MetricSeries1763877600008,
  SecurityTrail1763877600009,
  CodeAsBody1763877600010,
  LiveLogs1763877600011,
  BlobHomes1763877600012,
  OutputUploads1763877600013,
  Lz4Bodies1763877600014,
  EventReporters1763877600015,
  ServiceRoles1763877600016,
  TenantRows1763877600017,
  Retention1763877600018,
];
