import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { mkdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { CreateBucketCommand, HeadBucketCommand } from '@aws-sdk/client-s3';
import { createS3rver } from './local-s3';
import type { S3Config } from '../../shared/config';
import { createS3Client } from '../../shared/s3';
import type { StackContext } from './context';
import type { Progress } from './progress';
import { StackError } from './progress';
import { errorMessage } from './processes';
import { cannotStart, isPortFree } from './system';

/** True when anything answers HTTP at `endpoint` (an S3 server answers even unsigned requests, with an error). */
function answersHttp(endpoint: URL): Promise<boolean> {
  const request = endpoint.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    const req = request(endpoint, { method: 'GET', timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

function portOf(endpoint: URL): number {
  return Number(endpoint.port || (endpoint.protocol === 'https:' ? '443' : '80'));
}

/**
 * Makes sure an S3 API answers at the configured endpoint: uses it when it does, otherwise
 * (only for a local endpoint) runs s3rver inside this process with its files in `.data/s3`.
 * Then creates the configured bucket unless it exists.
 */
export async function ensureS3(config: S3Config, ctx: StackContext): Promise<void> {
  if (config.endpoint === '') {
    ctx.progress.ok("s3: S3_ENDPOINT is empty: using AWS's endpoint");
  } else {
    const endpoint = new URL(config.endpoint);
    const where = endpoint.host;
    if (await answersHttp(endpoint)) {
      ctx.progress.ok(`s3: ${where} answers; using it`);
    } else {
      const refusal = cannotStart(
        { what: 'an S3 server', variable: 'S3_ENDPOINT', host: endpoint.hostname, port: String(portOf(endpoint)) },
        { kind: 'nothing-listens' },
      );
      if (refusal !== undefined) throw refusal;
      if (endpoint.protocol !== 'http:') {
        throw new StackError(
          `s3: nothing answers on ${config.endpoint}`,
          'use an http:// S3_ENDPOINT for the local s3rver',
        );
      }
      await startS3rver(endpoint.hostname.replace(/^\[(.*)\]$/, '$1'), portOf(endpoint), ctx);
    }
  }
  await ensureBucket(config, ctx.progress);
}

async function startS3rver(address: string, port: number, ctx: StackContext): Promise<void> {
  // s3rver leaves a listen error unhandled (it would crash this process), so check first.
  if (!(await isPortFree(address, port))) {
    throw new StackError(
      `s3: ${address}:${port} is taken by something that does not speak HTTP`,
      'free the port or set S3_ENDPOINT to another one',
    );
  }
  const directory = join(ctx.dataDir, 's3');
  mkdirSync(directory, { recursive: true });
  ctx.progress.step(`s3: nothing answers on ${address}:${port}; starting s3rver`);
  const server = createS3rver({ address, port, directory, silent: true });
  await server.run();
  ctx.resources.add({ name: `s3rver on ${address}:${port}`, stop: () => server.close() });
  ctx.progress.ok(`s3: started s3rver on ${address}:${port} (files in ${relative(ctx.projectRoot, directory)})`);
}

async function ensureBucket(config: S3Config, progress: Progress): Promise<void> {
  const s3 = createS3Client(config);
  try {
    try {
      await s3.send(new HeadBucketCommand({ Bucket: config.bucket }));
      progress.ok(`s3: bucket "${config.bucket}" exists`);
      return;
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
    }
    await s3.send(new CreateBucketCommand({ Bucket: config.bucket }));
    progress.ok(`s3: created bucket "${config.bucket}"`);
  } catch (err) {
    throw new StackError(
      `s3: cannot use bucket "${config.bucket}": ${errorMessage(err)}`,
      'check S3_BUCKET and the S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY credentials',
    );
  } finally {
    s3.destroy();
  }
}
