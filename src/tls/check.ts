// Is a certificate still right? Pure checks with node:crypto's X509Certificate (no issuance
// library loaded): issued by the cluster's CA, its key, its SANs, how long it has left. Used on
// every reconcile pass (in memory, on what was read once) to decide on renewal.

import { X509Certificate, createPrivateKey } from 'node:crypto';

export interface WantedNames {
  dns: string[];
  ips: string[];
  /** the certificate also authenticates its host as a client (pgBackRest's TLS both ways) */
  clientAuth?: true;
}

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

export interface CertFacts {
  notBefore: number;
  notAfter: number;
  dns: string[];
  ips: string[];
  serial: string;
}

/** What a certificate says about itself; null when it is not a certificate. */
export function certFacts(pem: string): CertFacts | null {
  let c: X509Certificate;
  try {
    c = new X509Certificate(pem);
  } catch {
    return null;
  }
  const dns: string[] = [];
  const ips: string[] = [];
  for (const part of (c.subjectAltName ?? '').split(/,\s*/)) {
    if (part.startsWith('DNS:')) dns.push(part.slice(4));
    else if (part.startsWith('IP Address:')) ips.push(part.slice(11));
  }
  return {
    notBefore: Date.parse(c.validFrom),
    notAfter: Date.parse(c.validTo),
    dns,
    ips,
    serial: c.serialNumber,
  };
}

export type Verdict =
  /** fine: nothing to do */
  | null
  /** still valid and right, but due for renewal (renew in the background) */
  | { usable: true; reason: string }
  /** must be (re)issued before use */
  | { usable: false; reason: string };

const DAY_MS = 86_400_000;

/** The verdict on a server certificate and key against the CA, the wanted SANs and the clock. */
export function judgeServerCert(
  cert: string | null,
  key: string | null,
  caCert: string,
  want: WantedNames,
  now: number,
  renewBeforeDays: number,
): Verdict {
  if (!cert || !key) return { usable: false, reason: 'no certificate yet' };
  let c: X509Certificate;
  let ca: X509Certificate;
  try {
    c = new X509Certificate(cert);
    ca = new X509Certificate(caCert);
  } catch {
    return { usable: false, reason: 'the certificate cannot be read' };
  }
  if (!c.checkIssued(ca) || !c.verify(ca.publicKey))
    return { usable: false, reason: 'not issued by the current cluster CA' };
  try {
    if (!c.checkPrivateKey(createPrivateKey(key)))
      return { usable: false, reason: 'the key does not match the certificate' };
  } catch {
    return { usable: false, reason: 'the key cannot be read' };
  }
  const f = certFacts(cert)!;
  const same = (a: string[], b: string[]) =>
    a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);
  if (!same(f.ips, want.ips) || !same(f.dns, want.dns)) {
    return {
      usable: false,
      reason:
        `its names differ (has ${[...f.dns, ...f.ips].join(', ')}; ` +
        `wants ${[...want.dns, ...want.ips].join(', ')})`,
    };
  }
  if (want.clientAuth && !c.keyUsage?.includes(CLIENT_AUTH_OID))
    return { usable: false, reason: 'it cannot authenticate a client (pgBackRest needs it to)' };
  if (now >= f.notAfter) return { usable: false, reason: `expired on ${new Date(f.notAfter).toISOString()}` };
  if (now < f.notBefore)
    return { usable: false, reason: `not valid before ${new Date(f.notBefore).toISOString()}` };
  const left = f.notAfter - now;
  if (left <= renewBeforeDays * DAY_MS)
    return {
      usable: true,
      reason: `expires in ${Math.floor(left / DAY_MS)} days (renewed ${renewBeforeDays} days ahead)`,
    };
  return null;
}

/** The CA itself: null while it has more than `renewBeforeDays` left. */
export function judgeCa(
  cert: string | null,
  key: string | null,
  now: number,
  renewBeforeDays: number,
): Verdict {
  if (!cert || !key) return { usable: false, reason: 'no CA yet' };
  let c: X509Certificate;
  try {
    c = new X509Certificate(cert);
    if (!c.ca || !c.checkPrivateKey(createPrivateKey(key)))
      return { usable: false, reason: 'the CA certificate and key do not belong together' };
  } catch {
    return { usable: false, reason: 'the CA cannot be read' };
  }
  const notAfter = Date.parse(c.validTo);
  if (now >= notAfter) return { usable: false, reason: 'the CA expired' };
  if (notAfter - now <= renewBeforeDays * DAY_MS)
    return { usable: true, reason: `the CA expires in ${Math.floor((notAfter - now) / DAY_MS)} days` };
  return null;
}
