// The spec's tls settings with their defaults (pure: the renderers import this).

import type { ClusterSpec, TlsSpec } from '../spec/types.js';

export const TLS_DEFAULTS: TlsSpec = {
  enabled: true,
  certificateDays: 90,
  renewBeforeDays: 30,
  hostRules: 'hostssl',
};

/** The spec's tls settings with defaults; TLS is off for the simulated provider (no wire). */
export function tlsOf(cluster: ClusterSpec): TlsSpec {
  const t = { ...TLS_DEFAULTS, ...cluster.tls };
  return cluster.provider.type === 'sim' ? { ...t, enabled: false } : t;
}
