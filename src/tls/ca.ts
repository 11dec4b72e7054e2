// Certificate issuance for a cluster's private CA: ECDSA P-256 keys, SHA-256 signatures, made with
// @peculiar/x509 over Node's WebCrypto (no hand-written ASN.1, no openssl process). Loaded only
// when something must be issued (first use, renewal): ~0.2 s of imports that `pgop get` and the
// probe path never pay. Checking a certificate (validity, SANs, issuer) needs none of this:
// src/tls/check.ts does it with node:crypto's X509Certificate.

import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';

export interface Pem {
  /** PEM certificate */
  cert: string;
  /** PEM PKCS#8 private key */
  key: string;
}

export interface ServerSubject {
  /** CN, and the first DNS SAN */
  name: string;
  /** more DNS SANs */
  dns?: string[];
  /** IP address SANs (what the operator, pgpool and replicas connect to) */
  ips: string[];
  /** also a client certificate (extended key usage clientAuth) */
  clientAuth?: boolean;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** Certificates start a little in the past: a node whose clock is a minute behind must not see a
 *  certificate that is "not yet valid". */
const BACKDATE_MS = 3_600_000;

type X509 = typeof import('@peculiar/x509');
let lib: Promise<X509> | undefined;

async function x509(): Promise<X509> {
  lib ??= (async () => {
    // tsyringe (used by @peculiar/x509) needs the Reflect metadata API.
    await import('reflect-metadata');
    const m = await import('@peculiar/x509');
    m.cryptoProvider.set(webcrypto as unknown as Crypto);
    return m;
  })();
  return lib;
}

/** A positive 128-bit serial number, hex. */
function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex');
}

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey));
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({
    format: 'pem',
    type: 'pkcs8',
  }) as string;
}

async function importSigningKey(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' });
  return (await webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign'])) as unknown as CryptoKey;
}

/** A self-signed CA for one cluster (CA:TRUE, pathlen 0: it signs server certificates only). */
export async function createCa(cluster: string, now: Date, days: number): Promise<Pem> {
  const x = await x509();
  const keys = (await webcrypto.subtle.generateKey(ALG, true, [
    'sign',
    'verify',
  ])) as unknown as CryptoKeyPair;
  const cert = await x.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ CN: [`pgop cluster ${cluster} CA`] }, { O: ['pgop'] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x.BasicConstraintsExtension(true, 0, true),
      new x.KeyUsagesExtension(x.KeyUsageFlags.keyCertSign | x.KeyUsageFlags.cRLSign, true),
      await x.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key: await pkcs8Pem(keys.privateKey) };
}

/** A TLS server certificate signed by `ca`: SANs = the name (+ dns) and the IP addresses. */
export async function issueServer(ca: Pem, subject: ServerSubject, now: Date, days: number): Promise<Pem> {
  const x = await x509();
  const caCert = new x.X509Certificate(ca.cert);
  const keys = (await webcrypto.subtle.generateKey(ALG, true, [
    'sign',
    'verify',
  ])) as unknown as CryptoKeyPair;
  const dns = [...new Set([subject.name, ...(subject.dns ?? [])])];
  const cert = await x.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: [{ CN: [subject.name] }, { O: ['pgop'] }],
    issuer: caCert.subjectName,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
    publicKey: keys.publicKey,
    signingKey: await importSigningKey(ca.key),
    signingAlgorithm: ALG,
    extensions: [
      new x.SubjectAlternativeNameExtension([
        ...dns.map((value) => ({ type: 'dns' as const, value })),
        ...subject.ips.map((value) => ({ type: 'ip' as const, value })),
      ]),
      new x.BasicConstraintsExtension(false, undefined, true),
      new x.KeyUsagesExtension(x.KeyUsageFlags.digitalSignature, true),
      new x.ExtendedKeyUsageExtension(
        subject.clientAuth
          ? [x.ExtendedKeyUsage.serverAuth, x.ExtendedKeyUsage.clientAuth]
          : [x.ExtendedKeyUsage.serverAuth],
        false,
      ),
      await x.AuthorityKeyIdentifierExtension.create(caCert, false),
      await x.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key: await pkcs8Pem(keys.privateKey) };
}
