/**
 * veb(4) knobs of the Switch (docs/configuration.md): each test turns one knob on and checks what changes, so
 * each fails without its knob. Frames are copied out by CopyPort through frameCopyTo (the egress copy).
 */
import { describe, expect, test } from 'vitest';
import { DROP_REASONS, PORT_COUNTER_NAMES, Switch, parseIpv4 } from '../../../src/net/switch.js';
import { BCAST, MA, MB, MC, MD, arpPayload, bytesOf, frameFrom, key, setup } from './veb-helpers.js';

const send = (sw: Switch, p: { id: number } & object, b: Uint8Array, cuts: number[] = []) => sw.forward(p as never, frameFrom(b, cuts));

describe('veb per-port knobs', () => {
  test('-learn: sources seen on the port are not learned (frames to them keep flooding)', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.configurePort(a, { learn: false });
    send(sw, a, bytesOf(BCAST, MA));
    expect(sw.macTable.lookup(key(MA))).toBe(-1);
    send(sw, b, bytesOf(MA, MB)); // unknown → flood to a and c
    expect(c.take()).toEqual([`${BCAST}<${MA}`, `${MA}<${MB}`]);
    sw.configurePort(a, { learn: true });
    send(sw, a, bytesOf(BCAST, MA));
    expect(sw.macTable.lookup(key(MA))).toBe(a.id);
  });

  test('-discover: the port gets no unknown unicast, but still broadcast and known unicast', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.configurePort(c, { discover: false });
    send(sw, a, bytesOf(MD, MA)); // unknown unicast
    expect(b.take()).toEqual([`${MD}<${MA}`]);
    expect(c.take()).toEqual([]);
    send(sw, a, bytesOf(BCAST, MA));
    expect(c.take()).toEqual([`${BCAST}<${MA}`]);
    send(sw, c, bytesOf(BCAST, MC));
    send(sw, a, bytesOf(MC, MA)); // known
    expect(c.take()).toEqual([`${MC}<${MA}`]);
  });

  test('blocknonip: only IPv4/IPv6/ARP/RARP pass in and out of the port; counted per direction', () => {
    const { sw, ports } = setup(2);
    const [a, b] = ports;
    sw.configurePort(b, { blockNonIp: true });
    for (const et of [0x0800, 0x86dd, 0x0806, 0x8035, 0x88b5]) send(sw, a, bytesOf(BCAST, MA, { etype: et }));
    expect(b.frames.length).toBe(4);
    expect(sw.counters(b.id)!.dropBlockNonIpOut).toBe(1);
    send(sw, b, bytesOf(BCAST, MB, { etype: 0x88cc }));
    send(sw, b, bytesOf(BCAST, MB, { etype: 0x0800 }));
    expect(a.frames.length).toBe(1);
    expect(sw.counters(b.id)!.dropBlockNonIpIn).toBe(1);
  });

  test('locked: the source MAC must be a static entry of this port', () => {
    const { sw, ports } = setup(2);
    const [a, b] = ports;
    sw.configurePort(a, { locked: true });
    send(sw, a, bytesOf(BCAST, MA));
    expect(b.frames.length).toBe(0);
    expect(sw.counters(a.id)!.dropLocked).toBe(1);
    sw.addStatic(MA, a);
    send(sw, a, bytesOf(BCAST, MA));
    send(sw, a, bytesOf(BCAST, MC)); // spoofed source
    expect(b.take()).toEqual([`${BCAST}<${MA}`]);
    sw.addStatic(MB, b);
    send(sw, a, bytesOf(BCAST, MB)); // static, but of another port
    expect(sw.counters(a.id)!.dropLocked).toBe(3);
  });

  test('protected domains: no unicast or flood between ports sharing a domain; others unaffected', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.configurePort(a, { protected: [1, 5] });
    sw.configurePort(b, { protected: [5] });
    sw.configurePort(c, { protected: [2] });
    send(sw, a, bytesOf(BCAST, MA));
    expect(b.frames.length).toBe(0);
    expect(c.take()).toEqual([`${BCAST}<${MA}`]);
    send(sw, b, bytesOf(MA, MB)); // known unicast a, shared domain 5
    expect(a.frames.length).toBe(0);
    expect(sw.counters(b.id)!.dropProtected).toBe(1);
    send(sw, c, bytesOf(MA, MC));
    expect(a.take()).toEqual([`${MA}<${MC}`]);
    expect(() => sw.configurePort(a, { protected: [32] })).toThrow(/1\.\.31/);
  });

  test('span: gets an ingress copy of every accepted frame, is never a forwarding target, its input is dropped', () => {
    const { sw, ports } = setup(3);
    const [a, b, s] = ports;
    sw.configurePort(s, { span: true });
    send(sw, a, bytesOf(BCAST, MA));
    send(sw, b, bytesOf(MA, MB));
    expect(s.take()).toEqual([`${BCAST}<${MA}`, `${MA}<${MB}`]);
    expect(b.take()).toEqual([`${BCAST}<${MA}`]);
    send(sw, s, bytesOf(BCAST, MC));
    expect(a.take()).toEqual([`${MA}<${MB}`]);
    expect(sw.counters(s.id)!.dropSpanIn).toBe(1);
    sw.configurePort(a, { locked: true });
    send(sw, a, bytesOf(BCAST, MA)); // dropped before the span copy (locked comes first)
    expect(s.frames.length).toBe(0);
  });
});

describe('veb reserved addresses and filter rules', () => {
  test('01:80:c2:00:00:0X is never forwarded; 01:80:c2:00:00:10 is', () => {
    const { sw, ports } = setup(2);
    const [a, b] = ports;
    for (const d of ['01:80:c2:00:00:00', '01:80:c2:00:00:02', '01:80:c2:00:00:0e', '01:80:c2:00:00:0f']) send(sw, a, bytesOf(d, MA));
    expect(b.frames.length).toBe(0);
    expect(sw.counters(a.id)!.dropReserved).toBe(4);
    send(sw, a, bytesOf('01:80:c2:00:00:10', MA));
    expect(b.frames.length).toBe(1);
  });

  test('rules: block/pass by src/dst MAC, direction, first match wins, no match passes', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.addRule(a, { action: 'pass', dir: 'in', src: key(MA), dst: key(MC) });
    sw.addRule(a, { action: 'block', dir: 'in', src: key(MA) });
    send(sw, a, bytesOf(MC, MA)); // unknown → flood; first rule passes
    expect(b.frames.length + c.frames.length).toBe(2);
    send(sw, a, bytesOf(BCAST, MA)); // second rule blocks
    expect(sw.counters(a.id)!.dropRulesIn).toBe(1);
    send(sw, a, bytesOf(BCAST, MD)); // no match: passes
    expect(b.frames.length).toBe(2);
    sw.addRule(c, { action: 'block', dir: 'out', dst: key(BCAST) });
    c.take();
    send(sw, b, bytesOf(BCAST, MB));
    expect(c.frames.length).toBe(0);
    expect(sw.counters(c.id)!.dropRulesOut).toBe(1);
    expect(a.take().at(-1)).toBe(`${BCAST}<${MB}`);
    sw.flushRules(c);
    send(sw, b, bytesOf(BCAST, MB));
    expect(c.frames.length).toBe(1);
  });

  test('rules: ARP sha/spa/tha/tpa and request/reply; non-ARP frames never match an arp rule', () => {
    const { sw, ports } = setup(2);
    const [a, b] = ports;
    sw.addRule(a, { action: 'block', dir: 'in', arp: { spa: parseIpv4('10.0.0.1') } });
    sw.addRule(a, { action: 'block', dir: 'in', arp: { op: 'reply', sha: key(MD) } });
    const arp = (op: number, sha: string, spa: string) => bytesOf(BCAST, MA, { etype: 0x0806, payload: arpPayload(op, sha, spa, '00:00:00:00:00:00', '10.0.0.9') });
    send(sw, a, arp(1, MA, '10.0.0.1')); // blocked (spa)
    send(sw, a, arp(1, MA, '10.0.0.2')); // passes
    send(sw, a, arp(2, MD, '10.0.0.3')); // blocked (reply from sha MD)
    send(sw, a, arp(1, MD, '10.0.0.3')); // request from MD: passes
    // Split the ARP body across sg entries: still matched.
    send(sw, a, arp(1, MA, '10.0.0.1'), [20, 29]);
    // The same bytes as IPv4: no ARP match.
    const ip = arp(1, MA, '10.0.0.1');
    ip[13] = 0x00;
    send(sw, a, ip);
    expect(b.frames.length).toBe(3);
    expect(sw.counters(a.id)!.dropRulesIn).toBe(3);
    expect(parseIpv4('10.0.0.1')).toBe(0x0a000001);
    expect(() => parseIpv4('10.0.0.256')).toThrow();
  });

  test('every drop counter has a veb-style reason label', () => {
    for (const n of PORT_COUNTER_NAMES) if (n.startsWith('drop')) expect(DROP_REASONS).toHaveProperty(n);
    expect(DROP_REASONS).toMatchObject({ dropLocked: 'locked', dropProtected: 'protected', dropTaggedIn: 'tagged-in', dropDoubleTagged: 'double-tagged', dropRulesIn: 'rules-in', dropBlockNonIpOut: 'blocknonip-out' });
  });
});
