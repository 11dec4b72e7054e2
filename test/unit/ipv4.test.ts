import { describe, expect, it } from 'vitest';
import {
  formatIpv4,
  inNetwork,
  isHostOf,
  netmask,
  networkOf,
  parseCidr,
  parseIpv4,
} from '../../src/net/ipv4.js';

describe('ipv4', () => {
  it('parses dotted quads into unsigned numbers and back', () => {
    expect(parseIpv4('0.0.0.0')).toBe(0);
    expect(parseIpv4('10.77.0.11')).toBe(0x0a4d000b);
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff);
    expect(formatIpv4(0xffffffff)).toBe('255.255.255.255');
    expect(formatIpv4(parseIpv4('192.168.1.20')!)).toBe('192.168.1.20');
  });

  it('refuses what is not a dotted quad', () => {
    for (const bad of [
      '',
      '10.0.0',
      '10.0.0.256',
      '10.0.0.1.2',
      '1000.0.0.1',
      'a.b.c.d',
      ' 10.0.0.1',
      '10.0.0.1/24',
    ]) {
      expect(parseIpv4(bad), bad).toBeUndefined();
    }
    expect(parseIpv4(42)).toBeUndefined();
  });

  it('splits a CIDR, keeping host bits, refusing prefix lengths over 32', () => {
    expect(parseCidr('10.77.0.0/24')).toEqual({ address: 0x0a4d0000, prefixLen: 24 });
    expect(parseCidr('10.77.0.9/24')).toEqual({ address: 0x0a4d0009, prefixLen: 24 });
    expect(parseCidr('0.0.0.0/0')).toEqual({ address: 0, prefixLen: 0 });
    for (const bad of [
      '10.77.0.0',
      '10.77.0.0/33',
      '10.77.0.0/',
      '10.77.0/24',
      '10.77.0.0/24/1',
      '10.77.0.0/124',
    ]) {
      expect(parseCidr(bad), bad).toBeUndefined();
    }
  });

  it('computes masks, networks and membership', () => {
    expect(netmask(0)).toBe(0);
    expect(netmask(24)).toBe(0xffffff00);
    expect(netmask(32)).toBe(0xffffffff);
    const net = networkOf(parseIpv4('10.77.0.9')!, 24);
    expect(net).toEqual({ base: 0x0a4d0000, prefixLen: 24, broadcast: 0x0a4d00ff });
    expect(networkOf(parseIpv4('200.1.2.3')!, 0)).toEqual({ base: 0, prefixLen: 0, broadcast: 0xffffffff });
    expect(inNetwork(net.base, net)).toBe(true);
    expect(inNetwork(net.broadcast, net)).toBe(true);
    expect(inNetwork(net.broadcast + 1, net)).toBe(false);
    expect(isHostOf(net.base, net)).toBe(false);
    expect(isHostOf(net.broadcast, net)).toBe(false);
    expect(isHostOf(net.base + 1, net)).toBe(true);
    expect(isHostOf(parseIpv4('10.78.0.1')!, net)).toBe(false);
  });
});
