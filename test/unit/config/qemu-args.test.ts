/** QEMU argument generation and shell quoting. */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/parser.js';
import { formatShellArgs, qemuArgsForInterface, qemuArgsForVm } from '../../../src/config/qemu-args.js';

const cfg = parseConfig(
  `socket dir "/run/vhostd"
switch "uplink" { mtu 9000 }
switch "lan" {}
vm "vm13" {
  interface { switch "uplink"; lladdr fe:e1:bb:f1:c8:01 }
  interface { switch "lan"; lladdr fe:e1:bb:f1:c8:02 }
}`,
  '/etc/vhostd.conf',
);
const vm = cfg.vms[0]!;

describe('qemuArgsForVm', () => {
  it('shares guest RAM and attaches every interface', () => {
    expect(qemuArgsForVm(cfg, vm)).toEqual([
      '-object', 'memory-backend-memfd,id=mem,size=512M,share=on',
      '-machine', 'memory-backend=mem',
      '-chardev', 'socket,id=vm13-net0,path=/run/vhostd/vm13.net0.sock,reconnect=1',
      '-netdev', 'vhost-user,id=vm13-net0,chardev=vm13-net0',
      '-device', 'virtio-net-pci,netdev=vm13-net0,mac=fe:e1:bb:f1:c8:01,host_mtu=9000',
      '-chardev', 'socket,id=vm13-net1,path=/run/vhostd/vm13.net1.sock,reconnect=1',
      '-netdev', 'vhost-user,id=vm13-net1,chardev=vm13-net1',
      '-device', 'virtio-net-pci,netdev=vm13-net1,mac=fe:e1:bb:f1:c8:02,host_mtu=1500',
    ]);
  });

  it('takes the memory size and rejects a malformed one', () => {
    expect(qemuArgsForVm(cfg, vm, { memory: '2G' })[1]).toBe('memory-backend-memfd,id=mem,size=2G,share=on');
    expect(() => qemuArgsForVm(cfg, vm, { memory: '2 G' })).toThrow('expected a guest memory size like "512M" or "2G", got "2 G"');
  });
});

describe('qemuArgsForInterface', () => {
  it('appends vectors=0 for TCG and can leave out host_mtu', () => {
    const iface = vm.interfaces[0]!;
    expect(qemuArgsForInterface(cfg, vm, iface, { tcg: true }).at(-1)).toBe('virtio-net-pci,netdev=vm13-net0,mac=fe:e1:bb:f1:c8:01,host_mtu=9000,vectors=0');
    expect(qemuArgsForInterface(cfg, vm, iface, { hostMtu: false }).at(-1)).toBe('virtio-net-pci,netdev=vm13-net0,mac=fe:e1:bb:f1:c8:01');
  });

  it('escapes commas in the socket path', () => {
    const c = parseConfig('socket dir "/tmp/a,b"\nswitch "s" {}\nvm "v" { interface { switch "s" } }', 'f');
    expect(qemuArgsForInterface(c, c.vms[0]!, c.vms[0]!.interfaces[0]!)[1]).toBe('socket,id=v-net0,path=/tmp/a,,b/v.net0.sock,reconnect=1');
  });

  it('is stable for generated MACs', () => {
    const text = 'switch "s" {}\nvm "v" { interface { switch "s" } }';
    const a = parseConfig(text, 'f', { baseDir: '/x' });
    const b = parseConfig(text, 'f', { baseDir: '/x' });
    expect(qemuArgsForVm(a, a.vms[0]!)).toEqual(qemuArgsForVm(b, b.vms[0]!));
  });
});

describe('formatShellArgs', () => {
  it('leaves plain arguments bare and single-quotes the rest', () => {
    expect(formatShellArgs(['qemu', '-device', 'a=b,c:d/e.f', '', "it's", 'a b', '$x'])).toBe(`qemu -device a=b,c:d/e.f '' 'it'\\''s' 'a b' '$x'`);
  });

  it('puts each option on its own line when asked', () => {
    expect(formatShellArgs(['qemu-system-x86_64', '-m', '1G', '-nographic'], { multiline: true })).toBe('qemu-system-x86_64 \\\n  -m 1G \\\n  -nographic');
  });
});
