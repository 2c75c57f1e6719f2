import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A PEM certificate and its key, as files and as bytes. */
export interface IssuedCertificate {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** A throwaway certificate authority in a temporary directory (openssl, EC P-256 keys). */
export interface TestAuthority {
  readonly caFile: string;
  readonly ca: Buffer;
  /** A certificate signed by this CA for `subjectAltName`, e.g. "IP:127.0.0.1,DNS:localhost". */
  issue(name: string, subjectAltName: string): Promise<IssuedCertificate>;
  /** Removes the directory. */
  close(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

export async function createTestAuthority(): Promise<TestAuthority> {
  const dir = await mkdtemp(join(tmpdir(), 'crucible-ca-'));
  const caFile = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', caKey], dir);
  await openssl(
    ['req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '2', '-subj', '/CN=crucible test CA', '-out', caFile],
    dir,
  );
  let serial = 1;
  return {
    caFile,
    ca: await readFile(caFile),
    async issue(name, subjectAltName) {
      const keyFile = join(dir, `${name}.key`);
      const csr = join(dir, `${name}.csr`);
      const certFile = join(dir, `${name}.crt`);
      const extensions = join(dir, `${name}.ext`);
      await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile], dir);
      await openssl(['req', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-out', csr], dir);
      await writeFile(extensions, `subjectAltName=${subjectAltName}\n`);
      serial += 1;
      await openssl(
        [
          'x509',
          '-req',
          '-in',
          csr,
          '-CA',
          caFile,
          '-CAkey',
          caKey,
          '-set_serial',
          String(serial),
          '-days',
          '2',
          '-sha256',
          '-extfile',
          extensions,
          '-out',
          certFile,
        ],
        dir,
      );
      return { certFile, keyFile, cert: await readFile(certFile), key: await readFile(keyFile) };
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}
