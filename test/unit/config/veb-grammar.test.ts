/** parseConfig: the veb switch and interface keywords (docs/configuration.md), and their errors with file:line:col. */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/config/lexer.js';
import { parseConfig } from '../../../src/config/parser.js';

const EXAMPLE = `switch "uplink" {
    mtu 9000
    maxaddr 4096
    timeout 240
    vport "vport0"
    static fe:e1:bb:f1:c8:99 on "vm13.net0"
    rule block in on "vm14.net0" arp spa 10.0.0.1
    rule pass on "vm13.net0" src fe:e1:bb:f1:c8:01 dst ff:ff:ff:ff:ff:ff
    rule block out on "vm14.net0" rarp reply sha 02:00:00:00:00:01 tha 02:00:00:00:00:02 tpa 10.0.0.2
}
vm "vm13" {
    interface {
        switch "uplink"
        locked lladdr fe:e1:bb:f1:c8:01
        untagged 10
        tagged 20-30
        protected 1
        -discover
    }
}
vm "vm14" {
    interface { switch "uplink"; -learn; blocknonip; protected 1,3; tagged 5,7-8; untagged none; maxaddr 16 }
    interface { switch "uplink"; span; discover; learn; -blocknonip }
}
`;

function errorOf(text: string): string {
  try {
    parseConfig(text, 'vhostd.conf', { baseDir: '/etc' });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected parseConfig to throw');
}

const VMS = 'vm "vm1" { interface { switch "s" } }\n';

describe('veb grammar', () => {
  it('parses the issue example into the model', () => {
    const cfg = parseConfig(EXAMPLE, 'vhostd.conf', { baseDir: '/etc' });
    const sw = cfg.switches[0]!;
    expect(sw).toMatchObject({ name: 'uplink', mtu: 9000, maxAddr: 4096, timeout: 240, vport: 'vport0' });
    expect(sw.statics).toEqual([{ mac: 'fe:e1:bb:f1:c8:99', port: 'vm13.net0', pos: { line: 6, col: 5 } }]);
    expect(sw.rules).toEqual([
      { action: 'block', dir: 'in', port: 'vm14.net0', arp: { rarp: false, spa: '10.0.0.1' }, pos: { line: 7, col: 5 } },
      { action: 'pass', dir: 'in/out', port: 'vm13.net0', src: 'fe:e1:bb:f1:c8:01', dst: 'ff:ff:ff:ff:ff:ff', pos: { line: 8, col: 5 } },
      { action: 'block', dir: 'out', port: 'vm14.net0', arp: { rarp: true, op: 'reply', sha: '02:00:00:00:00:01', tha: '02:00:00:00:00:02', tpa: '10.0.0.2' }, pos: { line: 9, col: 5 } },
    ]);
    const [i13] = cfg.vms[0]!.interfaces;
    expect(i13).toMatchObject({ lladdr: 'fe:e1:bb:f1:c8:01', lladdrGenerated: false, locked: true, untagged: 10, protected: [1], discover: false });
    expect(i13!.tagged).toEqual(Array.from({ length: 11 }, (_, i) => 20 + i));
    const [i14, span] = cfg.vms[1]!.interfaces;
    expect(i14).toMatchObject({ learn: false, blockNonIp: true, protected: [1, 3], tagged: [5, 7, 8], untagged: 'none', maxAddr: 16 });
    expect(span).toMatchObject({ span: true, discover: true, learn: true, blockNonIp: false });
  });

  it('leaves the model unchanged when no veb keyword is used', () => {
    const cfg = parseConfig(`switch "s" { mtu 1500 }\n${VMS}`, 'f', { baseDir: '/etc' });
    expect(Object.keys(cfg.switches[0]!)).toEqual(['name', 'mtu', 'pos']);
    expect(Object.keys(cfg.vms[0]!.interfaces[0]!).sort()).toEqual(['index', 'lladdr', 'lladdrGenerated', 'pos', 'socketPath', 'switchName']);
  });

  it('range errors with positions', () => {
    expect(errorOf(`switch "s" {\n timeout 7\n}\n${VMS}`)).toBe('vhostd.conf:2:10: expected a timeout in seconds from 8 to 3600, got 7');
    expect(errorOf(`switch "s" { maxaddr 0 }\n${VMS}`)).toBe('vhostd.conf:1:22: expected an address count from 1 to 1048576, got 0');
    expect(errorOf(`switch "s" {}\nvm "vm1" { interface { switch "s"; protected 32 } }`)).toBe('vhostd.conf:2:46: expected protected domain ids from 1 to 31, got 32');
    expect(errorOf(`switch "s" {}\nvm "vm1" { interface { switch "s"; tagged 1-4095 } }`)).toBe('vhostd.conf:2:43: expected tagged VLAN ids from 1 to 4094, got 1-4095');
    expect(errorOf(`switch "s" {}\nvm "vm1" { interface { switch "s"; untagged 0 } }`)).toMatch(/^vhostd.conf:2:45: expected an untagged VLAN id from 1 to 4094/);
    expect(errorOf(`switch "s" { rule block on "vm1.net0" arp spa 10.0.0.300 }\n${VMS}`)).toMatch(/^vhostd.conf:1:47: expected an IPv4 address with octets/);
    expect(errorOf(`switch "s" { timeout 240; timeout 300 }\n${VMS}`)).toMatch(/^vhostd.conf:1:27: duplicate timeout/);
  });

  it('a static or rule naming an unknown port, or a port of another switch, is an error at the port', () => {
    expect(errorOf(`switch "s" {\n  static fe:e1:bb:f1:c8:99 on "vm2.net0"\n}\n${VMS}`)).toBe(
      'vhostd.conf:2:31: unknown port "vm2.net0", expected "<vm>.net<N>" of an interface on switch "s"',
    );
    expect(errorOf(`switch "s" {\n  rule block in on "vm1.net1"\n}\n${VMS}`)).toMatch(/^vhostd.conf:2:20: unknown port "vm1.net1"/);
    expect(errorOf(`switch "t" { rule pass on "vm1.net0" }\nswitch "s" {}\n${VMS}`)).toBe('vhostd.conf:1:27: port "vm1.net0" is on switch "s", not "t"');
    expect(errorOf(`switch "s" { static fe:e1:bb:f1:c8:99 on "vm1.net0"; static fe:e1:bb:f1:c8:99 on "vm1.net0" }\n${VMS}`)).toMatch(/duplicate static fe:e1:bb:f1:c8:99/);
  });

  it('syntax errors: locked without lladdr, rule without on, bad rule words, static of a multicast MAC', () => {
    expect(errorOf(`switch "s" {}\nvm "vm1" { interface { switch "s"; locked fe:e1:bb:f1:c8:01 } }`)).toBe('vhostd.conf:2:43: expected "lladdr" after locked (locked lladdr MAC), got "fe:e1:bb:f1:c8:01"');
    expect(errorOf(`switch "s" { rule block in "vm1.net0" }\n${VMS}`)).toMatch(/^vhostd.conf:1:28: expected "on" in the rule/);
    expect(errorOf(`switch "s" { rule drop on "vm1.net0" }\n${VMS}`)).toMatch(/^vhostd.conf:1:19: expected block or pass after rule, got "drop"/);
    expect(errorOf(`switch "s" { rule pass on "vm1.net0" vlan 3 }\n${VMS}`)).toMatch(/^vhostd.conf:1:38: expected src, dst, arp, rarp or the end of the rule, got "vlan"/);
    expect(errorOf(`switch "s" { rule pass on "vm1.net0" arp xyz }\n${VMS}`)).toMatch(/^vhostd.conf:1:42: expected sha, spa, tha, tpa/);
    expect(errorOf(`switch "s" { static 01:00:5e:00:00:01 on "vm1.net0" }\n${VMS}`)).toMatch(/^vhostd.conf:1:21: expected a unicast MAC address/);
    expect(errorOf(`switch "s" {}\nvm "vm1" { interface { switch "s"; lladdr fe:e1:bb:f1:c8:01; locked lladdr fe:e1:bb:f1:c8:02 } }`)).toMatch(/duplicate lladdr/);
  });
});
