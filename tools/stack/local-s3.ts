import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import S3rver from 's3rver';
import FilesystemStore from 's3rver/lib/stores/filesystem';

interface StoredObject {
  readonly bucket: string;
  readonly key: string;
  readonly metadata: Record<string, string>;
  readonly content: Buffer | Readable;
}

let patched = false;

/**
 * S3 replaces an object whole: a reader sees the old object or the new one, and two writers
 * racing on a key leave one of their objects. s3rver writes into the object's file in place and
 * answers the PUT before the file is complete, so a racing write interleaves with it and a read
 * right after the answer may find part of it (the blob contract tests S3's behaviour, and failed
 * on it at random). Its file store is made to write a file of its own and rename it over the
 * object once complete.
 */
function replaceObjectsWhole(): void {
  if (patched) return;
  patched = true;
  FilesystemStore.prototype.putObject = async function putObject(this: FilesystemStore, object: StoredObject) {
    const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
    await mkdir(dirname(objectPath), { recursive: true });
    // Not named like an object (`._S3rver_object`): listings never show it.
    const partial = `${objectPath}.${randomBytes(6).toString('hex')}.partial`;
    const md5 = createHash('md5');
    let size = 0;
    try {
      if (Buffer.isBuffer(object.content)) {
        md5.update(object.content);
        size = object.content.length;
        await writeFile(partial, object.content);
      } else {
        const measure = new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            md5.update(chunk);
            size += chunk.length;
            callback(null, chunk);
          },
        });
        await pipeline(object.content, measure, createWriteStream(partial));
      }
      await rename(partial, objectPath);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
    const digest = md5.digest('hex');
    await this.putMetadata(object.bucket, object.key, object.metadata, digest);
    return { size, md5: digest };
  };
}

/** An s3rver whose objects are replaced whole, as S3's are (every local S3 server of the stack, tests and bench is made here). */
export function createS3rver(options: ConstructorParameters<typeof S3rver>[0]): S3rver {
  replaceObjectsWhole();
  return new S3rver(options);
}
