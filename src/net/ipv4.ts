// IPv4 addresses and CIDR networks as unsigned 32-bit numbers (pure). The spec checks, the lab
// and the libvirt provider each decide which networks they accept; the arithmetic is here.

/** `a.b.c.d` (each part 0-255, at most three digits) as a number, or undefined. */
export function parseIpv4(text: unknown): number | undefined {
  if (typeof text !== 'string') return undefined;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const part = Number(m[i]);
    if (part > 255) return undefined;
    n = n * 256 + part;
  }
  return n;
}

export const formatIpv4 = (n: number): string =>
  [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/** `address/prefixLen` split and parsed, host bits kept; undefined unless both parts are valid
 *  (prefix length 0-32). */
export function parseCidr(text: unknown): { address: number; prefixLen: number } | undefined {
  if (typeof text !== 'string') return undefined;
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  const address = m ? parseIpv4(m[1]) : undefined;
  const prefixLen = Number(m?.[2]);
  if (address === undefined || !(prefixLen >= 0 && prefixLen <= 32)) return undefined;
  return { address, prefixLen };
}

export interface Ipv4Network {
  /** the network address (host bits clear) */
  base: number;
  prefixLen: number;
  broadcast: number;
}

export function netmask(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

/** The network an address lies in, for a prefix length 0-32. */
export function networkOf(address: number, prefixLen: number): Ipv4Network {
  const mask = netmask(prefixLen);
  const base = (address & mask) >>> 0;
  return { base, prefixLen, broadcast: (base | ~mask) >>> 0 };
}

/** Inside the network, network and broadcast addresses included. */
export const inNetwork = (ip: number, net: Ipv4Network): boolean => ip >= net.base && ip <= net.broadcast;

/** A host address of the network: inside it, neither its network nor its broadcast address. */
export const isHostOf = (ip: number, net: Ipv4Network): boolean => ip > net.base && ip < net.broadcast;
