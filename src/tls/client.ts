// The operator's side of TLS on its pg connections (node-pg): verify-full against the cluster CA
// (the chain up to the CA, and the peer's address among the certificate's IP SANs), clear words
// when a certificate is refused, and no password ever given to a server that asks for it in
// clear text or as MD5: pgop's roles authenticate by SCRAM only (with channel binding,
// SCRAM-SHA-256-PLUS, where the server offers it), so such a request can only come from someone
// who is not the server pgop configured.

import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type pg from 'pg';

export interface Peer {
  /** for messages: the node's name, or "pgpool" */
  name: string;
  /** the address connected to: must be an IP SAN of the certificate */
  address: string;
}

/** node-pg `ssl` options: verify-full against `caBundle`. */
export function clientTls(caBundle: string, peer: Peer): pg.ClientConfig['ssl'] {
  return {
    ca: caBundle,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    // pg gives tls the host it connected to (an IP: checked against the IP SANs; no SNI)
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      const err = checkServerIdentity(peer.address, cert);
      if (err) {
        err.message =
          `the certificate of ${peer.name} does not name ${peer.address} ` +
          `(${(err as Error & { reason?: string }).reason ?? err.message})`;
      }
      return err;
    },
  };
}

/** TLS verification failures (OpenSSL's codes as Node reports them) and what they mean here. */
const TLS_CODES: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'not issued by the cluster CA',
  UNABLE_TO_GET_ISSUER_CERT: 'not issued by the cluster CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'not issued by the cluster CA',
  SELF_SIGNED_CERT_IN_CHAIN: 'not issued by the cluster CA (a chain to a foreign root)',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed, not issued by the cluster CA',
  CERT_SIGNATURE_FAILURE: 'its signature does not verify',
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not yet valid',
  ERR_TLS_CERT_ALTNAME_INVALID: 'issued for another host',
  INVALID_CA: 'its CA is not a CA',
  CERT_REJECTED: 'rejected',
};

/** "TLS: <peer>'s certificate refused: <why>" for a certificate failure; null for others. */
export function explainTlsError(err: unknown, peer?: string): string | null {
  const e = err as { code?: string; message?: string } | null;
  const why = e?.code ? TLS_CODES[e.code] : undefined;
  if (!why) return null;
  return (
    `TLS: the server certificate${peer ? ` of ${peer}` : ''} is refused: ` +
    `${why} (${e?.message ?? e?.code}); nothing was sent to it`
  );
}

/** Refuse clear-text and MD5 password requests on this client: the connect fails before any
 *  password (or hash of one) leaves. Call before connect(). */
export function scramOnly(client: pg.Client): pg.Client {
  type Internals = { connection: { emit(ev: string, err: Error): void; stream?: { destroy(): void } } };
  const refuse = (what: string) =>
    function (this: Internals) {
      const err = Object.assign(
        new Error(
          `the server asked for a ${what} password: refused ` +
            `(pgop authenticates by SCRAM only; is this the server pgop configured?)`,
        ),
        { code: 'PGOP_AUTH_DOWNGRADE' },
      );
      this.connection.emit('error', err);
      this.connection.stream?.destroy();
    };
  const c = client as unknown as Record<string, unknown>;
  c._handleAuthCleartextPassword = refuse('clear-text');
  c._handleAuthMD5Password = refuse('MD5');
  return client;
}
