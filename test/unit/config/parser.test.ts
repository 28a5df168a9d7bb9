/** parseConfig: the issue example, paths, statement syntax, generated MACs, and every error case. */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/config/lexer.js';
import { canonicalMac, generatedLladdr, parseConfig } from '../../../src/config/parser.js';

const EXAMPLE = `# vhostd.conf
socket dir "/run/vhostd"       # vhost-user sockets are created here (default ./run)
switch "uplink" {
    mtu 1500
}
vm "vm13" {
    interface {
        switch "uplink"
        lladdr fe:e1:bb:f1:c8:01
    }
    interface { switch "uplink" }
}
`;

/** The thrown message (all diagnostics, one per line). */
function errorOf(text: string, file = 'vhostd.conf'): string {
  try {
    parseConfig(text, file, { baseDir: '/etc' });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected parseConfig to throw');
}

const SW = 'switch "uplink" { mtu 1500 }\n';

describe('parseConfig: the example', () => {
  it('parses to the expected model', () => {
    const cfg = parseConfig(EXAMPLE, 'vhostd.conf', { baseDir: '/etc' });
    expect(cfg).toEqual({
      file: 'vhostd.conf',
      socketDir: '/run/vhostd',
      switches: [{ name: 'uplink', mtu: 1500, pos: { line: 3, col: 1 } }],
      vms: [
        {
          name: 'vm13',
          pos: { line: 6, col: 1 },
          interfaces: [
            {
              index: 0,
              switchName: 'uplink',
              lladdr: 'fe:e1:bb:f1:c8:01',
              lladdrGenerated: false,
              socketPath: '/run/vhostd/vm13.net0.sock',
              pos: { line: 7, col: 5 },
            },
            {
              index: 1,
              switchName: 'uplink',
              lladdr: generatedLladdr('vm13', 1),
              lladdrGenerated: true,
              socketPath: '/run/vhostd/vm13.net1.sock',
              pos: { line: 11, col: 5 },
            },
          ],
        },
      ],
    });
  });
});

describe('parseConfig: paths', () => {
  it('names sockets <socket dir>/<vm>.net<N>.sock', () => {
    const cfg = parseConfig(`socket dir "/s"\n${SW}vm "a" {\n interface { switch "uplink" }\n interface { switch "uplink" }\n interface { switch "uplink" }\n}\nvm "b" { interface { switch "uplink" } }`, 'f');
    expect(cfg.vms.flatMap((v) => v.interfaces.map((i) => i.socketPath))).toEqual(['/s/a.net0.sock', '/s/a.net1.sock', '/s/a.net2.sock', '/s/b.net0.sock']);
  });

  it('resolves a relative socket dir against the directory of the file', () => {
    expect(parseConfig('socket dir "sock/x"', '/etc/vhostd/vhostd.conf').socketDir).toBe('/etc/vhostd/sock/x');
    expect(parseConfig('socket dir "../s"', '/etc/vhostd/vhostd.conf').socketDir).toBe('/etc/s');
  });

  it('resolves against opts.baseDir when given', () => {
    expect(parseConfig('socket dir "s"', 'whatever.conf', { baseDir: '/base' }).socketDir).toBe('/base/s');
  });

  it('defaults the socket dir to ./run relative to the file', () => {
    expect(parseConfig('', '/etc/vhostd/vhostd.conf').socketDir).toBe('/etc/vhostd/run');
  });

  it('keeps an absolute socket dir (normalized)', () => {
    expect(parseConfig('socket dir "/run//vhostd/"', '/etc/x.conf').socketDir).toBe('/run/vhostd');
  });
});

describe('parseConfig: syntax', () => {
  it('accepts one-line blocks, nested one-line blocks and ; separators', () => {
    const one = parseConfig(`switch "uplink" { mtu 9000 }; vm "a" { interface { switch "uplink"; lladdr fe:e1:bb:00:00:01 }; interface { switch "uplink" } }`, 'f');
    expect(one.switches[0]!.mtu).toBe(9000);
    expect(one.vms[0]!.interfaces.map((i) => i.lladdr)[0]).toBe('fe:e1:bb:00:00:01');
    expect(one.vms[0]!.interfaces).toHaveLength(2);
  });

  it('ignores comments, blank lines and empty statements', () => {
    const cfg = parseConfig(`# top\n\n;;\nswitch "uplink" { # open\n  # inside\n  mtu 1400 # trailing\n  ;\n}\n# end`, 'f');
    expect(cfg.switches).toEqual([{ name: 'uplink', mtu: 1400, pos: { line: 4, col: 1 } }]);
  });

  it('poll: a switch in poll mode; absent means event-driven; given twice is an error', () => {
    const cfg = parseConfig('switch "p" { poll }\nswitch "e" { mtu 1500 }', 'f');
    expect(cfg.switches.map((s) => [s.name, s.poll])).toEqual([['p', true], ['e', undefined]]);
    expect(errorOf('switch "p" {\n  poll\n  poll\n}')).toMatch(/^vhostd\.conf:3:3: .*poll/);
  });

  it('defaults mtu to 1500 and allows empty blocks and vms without interfaces', () => {
    const cfg = parseConfig('switch "s" {}\nvm "v" {\n}', 'f');
    expect(cfg.switches[0]!.mtu).toBe(1500);
    expect(cfg.vms[0]!.interfaces).toEqual([]);
  });

  it('canonicalizes MACs to lower case with two digits per octet', () => {
    const cfg = parseConfig(`${SW}vm "a" { interface { switch "uplink"; lladdr FE:E1:B:F1:C8:1 } }`, 'f');
    expect(cfg.vms[0]!.interfaces[0]!.lladdr).toBe('fe:e1:0b:f1:c8:01');
    expect(canonicalMac('fe:e1:bb:f1:c8')).toBeUndefined();
    expect(canonicalMac('fe-e1-bb-f1-c8-01')).toBeUndefined();
  });

  it('accepts names with escapes in strings', () => {
    expect(() => parseConfig('socket dir "/a \\"b\\" \\\\c"', 'f')).not.toThrow();
    expect(parseConfig('socket dir "/a \\"b\\""', 'f').socketDir).toBe('/a "b"');
  });
});

describe('parseConfig: generated MACs', () => {
  it('are deterministic, locally administered unicast fe:e1:ba:xx:xx:xx', () => {
    const text = `${SW}vm "a" { interface { switch "uplink" }; interface { switch "uplink" } }\nvm "b" { interface { switch "uplink" } }`;
    const macs1 = parseConfig(text, 'f').vms.flatMap((v) => v.interfaces.map((i) => i.lladdr));
    const macs2 = parseConfig(`# reordered comment\n${text}`, 'g').vms.flatMap((v) => v.interfaces.map((i) => i.lladdr));
    expect(macs1).toEqual(macs2);
    expect(new Set(macs1).size).toBe(3);
    for (const m of macs1) {
      expect(m).toMatch(/^fe:e1:ba:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
      expect(parseInt(m.slice(0, 2), 16) & 3).toBe(2); // locally administered, unicast
    }
    expect(macs1[0]).toBe(generatedLladdr('a', 0));
    expect(generatedLladdr('a', 0)).toBe(generatedLladdr('a', 0));
    expect(generatedLladdr('a', 0)).not.toBe(generatedLladdr('a', 1));
  });

  it('step around an explicitly configured address', () => {
    const taken = generatedLladdr('b', 0);
    const cfg = parseConfig(`${SW}vm "a" { interface { switch "uplink"; lladdr ${taken} } }\nvm "b" { interface { switch "uplink" } }`, 'f');
    expect(cfg.vms[1]!.interfaces[0]!.lladdr).toBe(generatedLladdr('b', 0, 1));
    expect(cfg.vms[1]!.interfaces[0]!.lladdr).not.toBe(taken);
  });
});

describe('parseConfig: errors name file:line:col and what was expected', () => {
  it('bad MAC', () => {
    expect(errorOf(`${SW}vm "vm13" {\n    interface {\n        lladdr zz\n    }\n}`)).toBe(
      'vhostd.conf:4:16: expected a MAC address like fe:e1:bb:f1:c8:01, got "zz"',
    );
  });

  it('MAC given as a string', () => {
    expect(errorOf(`${SW}vm "v" { interface { switch "uplink"; lladdr "fe:e1:bb:f1:c8:01" } }`)).toBe(
      'vhostd.conf:2:46: expected a MAC address like fe:e1:bb:f1:c8:01, got string "fe:e1:bb:f1:c8:01"',
    );
  });

  it('multicast and all-zero MACs', () => {
    expect(errorOf(`${SW}vm "v" { interface { switch "uplink"; lladdr 01:00:5e:00:00:01 } }`)).toBe(
      'vhostd.conf:2:46: expected a unicast MAC address, got multicast address 01:00:5e:00:00:01',
    );
    expect(errorOf(`${SW}vm "v" { interface { switch "uplink"; lladdr ff:ff:ff:ff:ff:ff } }`)).toMatch(/^vhostd.conf:2:46: expected a unicast MAC address, got multicast/);
    expect(errorOf(`${SW}vm "v" { interface { switch "uplink"; lladdr 0:0:0:0:0:0 } }`)).toBe('vhostd.conf:2:46: expected a unicast MAC address, got the all-zero address');
  });

  it('duplicate lladdr across vms', () => {
    expect(errorOf(`${SW}vm "a" {\n interface { switch "uplink"; lladdr fe:e1:bb:00:00:01 }\n}\nvm "b" {\n interface { switch "uplink"; lladdr FE:E1:BB:00:00:01 }\n}`)).toBe(
      'vhostd.conf:6:38: duplicate lladdr fe:e1:bb:00:00:01, already used by vm "a" interface 0 at 3:2',
    );
  });

  it('mtu out of range and not a number', () => {
    expect(errorOf('switch "s" {\n  mtu 67\n}')).toBe('vhostd.conf:2:7: expected an mtu from 68 to 65535, got 67');
    expect(errorOf('switch "s" { mtu 65536 }')).toBe('vhostd.conf:1:18: expected an mtu from 68 to 65535, got 65536');
    expect(errorOf('switch "s" { mtu 0x10 }')).toBe('vhostd.conf:1:18: expected an mtu (a decimal number from 68 to 65535), got "0x10"');
    expect(errorOf('switch "s" { mtu }')).toBe('vhostd.conf:1:18: expected an mtu (a decimal number from 68 to 65535), got "}"');
    expect(errorOf('switch "s" {\n mtu\n}')).toBe('vhostd.conf:2:5: expected an mtu (a decimal number from 68 to 65535), got end of line');
    expect(() => parseConfig('switch "s" { mtu 68 }\nswitch "t" { mtu 65535 }', 'f')).not.toThrow();
  });

  it('unknown keywords list the expected ones', () => {
    expect(errorOf('swtich "s" {}')).toBe('vhostd.conf:1:1: unknown keyword "swtich" at top level, expected one of: socket, switch, vm, control, metrics, log, backing, max');
    expect(errorOf('switch "s" {\n  pvlan 100\n}')).toBe('vhostd.conf:2:3: unknown keyword "pvlan" in the switch block, expected one of: mtu, maxaddr, timeout, poll, vport, static, rule');
    expect(errorOf('vm "v" { cdrom "/x.iso" }')).toBe('vhostd.conf:1:10: unknown keyword "cdrom" in the vm block, expected one of: interface, disk, owner');
    expect(errorOf('vm "v" { interface { group "x" } }')).toBe(
      'vhostd.conf:1:22: unknown keyword "group" in the interface block, expected one of: switch, lladdr, locked, learn, -learn, discover, -discover, blocknonip, -blocknonip, span, protected, untagged, tagged, maxaddr',
    );
    expect(errorOf('socket group wheel')).toBe('vhostd.conf:1:8: unknown keyword "group" in the socket statement, expected one of: dir, owner');
    expect(errorOf('socket "dir"')).toBe('vhostd.conf:1:8: expected one of: dir, owner after socket, got string "dir"');
  });

  it('a non-keyword where a statement starts', () => {
    expect(errorOf('}')).toBe('vhostd.conf:1:1: expected a keyword (socket, switch, vm, control, metrics, log, backing, max) at top level, got "}"');
    expect(errorOf('switch "s" { "mtu" 1 }')).toBe('vhostd.conf:1:14: expected a keyword (mtu, maxaddr, timeout, poll, vport, static, rule) in the switch block, got string "mtu"');
  });

  it('names must be quoted strings', () => {
    expect(errorOf('switch uplink {}')).toBe('vhostd.conf:1:8: expected a switch name in double quotes like "uplink", got uplink without quotes');
    expect(errorOf('vm {}')).toBe('vhostd.conf:1:4: expected a vm name in double quotes like "vm1", got "{"');
    expect(errorOf('socket dir\n')).toBe('vhostd.conf:1:11: expected a socket directory in double quotes like "/run/vhostd", got end of line');
  });

  it('names must be letters, digits, . - _ starting with a letter', () => {
    expect(errorOf('vm "9 lives" {}')).toBe('vhostd.conf:1:4: expected a vm name of letters, digits, ".", "-" or "_" starting with a letter, got "9 lives"');
    expect(errorOf('switch "a/b" {}')).toBe('vhostd.conf:1:8: expected a switch name of letters, digits, ".", "-" or "_" starting with a letter, got "a/b"');
  });

  it('missing or misplaced braces', () => {
    expect(errorOf('switch "s"\n{\n}')).toBe('vhostd.conf:1:11: expected "{" to open the switch "s" block, got end of line');
    expect(errorOf('vm "v" { interface switch "s" }')).toBe('vhostd.conf:1:20: expected "{" to open the interface block, got "switch"');
    expect(errorOf('vm "v" {\n  interface {\n')).toBe('vhostd.conf:3:1: expected "}" to close the interface block opened at 2:13, got end of file');
  });

  it('junk after a statement', () => {
    expect(errorOf('switch "s" {\n  mtu 1500 1600\n}')).toBe('vhostd.conf:2:12: expected end of line, ";" or "}" after the mtu statement, got "1600"');
    expect(errorOf('socket dir "/a" "/b"')).toBe('vhostd.conf:1:17: expected end of line or ";" after the socket statement, got string "/b"');
    expect(errorOf('switch "s" {} vm "v" {}')).toBe('vhostd.conf:1:15: expected end of line or ";" after the switch statement, got "vm"');
  });

  it('duplicate settings inside one block', () => {
    expect(errorOf('switch "s" {\n mtu 1500\n mtu 9000\n}')).toBe('vhostd.conf:3:2: duplicate mtu, already set at 2:6');
    expect(errorOf('socket dir "/a"\nsocket dir "/b"')).toBe('vhostd.conf:2:8: duplicate socket dir, already set at 1:12');
    expect(errorOf(`${SW}vm "v" { interface { switch "uplink"; switch "uplink" } }`)).toBe('vhostd.conf:2:39: duplicate switch, already set at 2:29');
  });

  it('duplicate switch and vm names', () => {
    expect(errorOf('switch "s" {}\nswitch "s" { mtu 9000 }')).toBe('vhostd.conf:2:8: duplicate switch "s", first defined at 1:8');
    expect(errorOf('vm "v" {}\n\nvm "v" {}')).toBe('vhostd.conf:3:4: duplicate vm "v", first defined at 1:4');
  });

  it('interface referencing an unknown switch, at the reference', () => {
    expect(errorOf(`${SW}vm "v" {\n  interface { switch "upl1nk" }\n}`)).toBe('vhostd.conf:3:22: unknown switch "upl1nk", expected one of: "uplink"');
    expect(errorOf('vm "v" { interface { switch "x" } }')).toBe('vhostd.conf:1:29: unknown switch "x", expected a switch defined with switch "NAME" { ... }');
  });

  it('interface without a switch, at its {', () => {
    expect(errorOf(`${SW}vm "v" {\n  interface {\n    lladdr fe:e1:bb:00:00:01\n  }\n}`)).toBe(
      'vhostd.conf:3:13: expected switch "NAME" in the interface block (interface 0 of vm "v" has no switch)',
    );
  });

  it('socket paths longer than a unix socket allows', () => {
    // 94-byte dir: the default control socket (dir + "/vhostd.sock", 106 bytes) fits, vmlong.net0.sock does not.
    const dir = `/${'d'.repeat(93)}`;
    expect(errorOf(`socket dir "${dir}"\n${SW}vm "vmlong" {\n  interface { switch "uplink" }\n}`)).toMatch(
      /^vhostd.conf:4:3: expected a socket path of at most 107 bytes, got 111 bytes \(\/d+\/vmlong\.net0\.sock\)/,
    );
  });

  it('collects several semantic errors, sorted by position', () => {
    const msg = errorOf(`switch "s" { mtu 1 }\nswitch "s" {}\nvm "v" {\n  interface { switch "x" }\n  interface {}\n}`, 'c.conf');
    expect(msg.split('\n')).toEqual([
      'c.conf:1:18: expected an mtu from 68 to 65535, got 1',
      'c.conf:2:8: duplicate switch "s", first defined at 1:8',
      'c.conf:4:22: unknown switch "x", expected one of: "s"',
      'c.conf:5:13: expected switch "NAME" in the interface block (interface 1 of vm "v" has no switch)',
    ]);
  });

  it('reports collected errors together with the syntax error that stopped parsing', () => {
    expect(errorOf('switch "s" { mtu 1 }\nbogus').split('\n')).toEqual([
      'vhostd.conf:1:18: expected an mtu from 68 to 65535, got 1',
      'vhostd.conf:2:1: unknown keyword "bogus" at top level, expected one of: socket, switch, vm, control, metrics, log, backing, max',
    ]);
  });

  it('lexical errors carry the file name', () => {
    expect(errorOf('socket dir "/run\n', 'my.conf')).toBe('my.conf:1:12: unterminated string, expected a closing " on the same line');
  });
});

describe('parseConfig: max guest memory', () => {
  it('takes K/M/G/T sizes from 1G to 64T; absent means the default', () => {
    expect(parseConfig('max guest memory 1T', 'c', { baseDir: '/etc' }).maxGuestMemory).toBe(2 ** 40);
    expect(parseConfig('max guest memory 512G', 'c', { baseDir: '/etc' }).maxGuestMemory).toBe(512 * 2 ** 30);
    expect(parseConfig('max guest memory 1048576K', 'c', { baseDir: '/etc' }).maxGuestMemory).toBe(2 ** 30);
    expect(parseConfig('', 'c', { baseDir: '/etc' }).maxGuestMemory).toBeUndefined();
  });

  it('refuses sizes out of range, malformed ones and a second setting', () => {
    expect(errorOf('max guest memory 512M')).toBe('vhostd.conf:1:18: expected a guest memory size from 1G to 64T like 1T or 512G after max guest memory, got "512M"');
    expect(errorOf('max guest memory 65T')).toContain('expected a guest memory size from 1G to 64T');
    expect(errorOf('max guest memory lots')).toContain('expected a guest memory size from 1G to 64T');
    expect(errorOf('max memory 1T')).toContain('vhostd.conf:1:5:');
    expect(errorOf('max guest memory 1T\nmax guest memory 2T')).toBe('vhostd.conf:2:1: duplicate max guest memory, already set at 1:18');
  });
});
