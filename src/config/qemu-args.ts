/**
 * QEMU command-line arguments that attach a guest to vhostd, generated from the configuration.
 *
 * vhost-user needs the guest RAM to be shared memory: the backend maps it from file descriptors
 * QEMU sends over the socket. Hence the memfd memory backend with share=on, installed as the
 * machine's RAM with `-machine memory-backend=mem` (QEMU >= 5.0). Without it the backend cannot see
 * guest buffers and the device never works. If the QEMU command line also has `-m`, it must equal the
 * backend size.
 *
 * Per interface: a client chardev that connects (and reconnects) to vhostd's socket, a vhost-user
 * netdev on it, and a virtio-net-pci device with the configured MAC. Per disk: a client chardev (reconnecting)
 * and a vhost-user-blk-pci device on it (num-queues defaults to the vCPU count; vhostd serves up to 16).
 */
import { VhostError } from '../util/errors.js';
import { findSwitch, type Config, type DiskConfig, type InterfaceConfig, type VmConfig } from './model.js';

export interface QemuArgsOptions {
  /** QEMU 7.2 under TCG needs MSI-X off (`vectors=0`) on vhost-user PCI devices. Default false. */
  tcg?: boolean;
  /** Add `host_mtu=<switch mtu>` (QEMU then offers VIRTIO_NET_F_MTU to the guest). Default true. */
  hostMtu?: boolean;
  /** Guest RAM size, QEMU syntax (e.g. "512M", "2G"). Default "512M". */
  memory?: string;
}

export const DEFAULT_GUEST_MEMORY = '512M';

/** QEMU option values escape a ',' by doubling it. */
function optValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/** The id shared by the chardev, netdev and device of one interface, e.g. "vm13-net0". */
export function qemuNetId(vm: VmConfig, iface: InterfaceConfig): string {
  return `${vm.name}-net${iface.index}`;
}

/** `-object memory-backend-memfd,... -machine memory-backend=mem`: shared guest RAM (required). */
export function qemuMemoryArgs(opts: QemuArgsOptions = {}): string[] {
  const size = opts.memory ?? DEFAULT_GUEST_MEMORY;
  if (!/^[1-9][0-9]*[KMGT]?$/.test(size)) {
    throw new VhostError('ERR_CONFIG', `expected a guest memory size like "512M" or "2G", got ${JSON.stringify(size)}`);
  }
  return ['-object', `memory-backend-memfd,id=mem,size=${size},share=on`, '-machine', 'memory-backend=mem'];
}

export function qemuArgsForInterface(cfg: Config, vm: VmConfig, iface: InterfaceConfig, opts: QemuArgsOptions = {}): string[] {
  const id = qemuNetId(vm, iface);
  let device = `virtio-net-pci,netdev=${id},mac=${iface.lladdr}`;
  if (opts.hostMtu ?? true) {
    const sw = findSwitch(cfg, iface.switchName);
    if (!sw) throw new VhostError('ERR_CONFIG', `interface ${iface.index} of vm "${vm.name}" references unknown switch "${iface.switchName}"`);
    device += `,host_mtu=${sw.mtu}`;
  }
  if (opts.tcg) device += ',vectors=0';
  return [
    '-chardev', `socket,id=${id},path=${optValue(iface.socketPath)},reconnect=1`,
    '-netdev', `vhost-user,id=${id},chardev=${id}`,
    '-device', device,
  ];
}

/** The id shared by the chardev and device of one disk, e.g. "vm13-disk0". */
export function qemuDiskId(vm: VmConfig, disk: DiskConfig): string {
  return `${vm.name}-disk${disk.index}`;
}

export function qemuArgsForDisk(vm: VmConfig, disk: DiskConfig, opts: QemuArgsOptions = {}): string[] {
  const id = qemuDiskId(vm, disk);
  return [
    '-chardev', `socket,id=${id},path=${optValue(disk.socketPath)},reconnect=1`,
    '-device', `vhost-user-blk-pci,chardev=${id}${opts.tcg ? ',vectors=0' : ''}`,
  ];
}

/** Memory backend plus every interface of the vm, in interface order, then every disk. */
export function qemuArgsForVm(cfg: Config, vm: VmConfig, opts: QemuArgsOptions = {}): string[] {
  return [
    ...qemuMemoryArgs(opts),
    ...vm.interfaces.flatMap((iface) => qemuArgsForInterface(cfg, vm, iface, opts)),
    ...(vm.disks ?? []).flatMap((d) => qemuArgsForDisk(vm, d, opts)),
  ];
}

/**
 * Quote arguments for display as a POSIX shell command line. With `multiline`, each option
 * (an argument starting with '-') begins a new line, continued with " \".
 */
export function formatShellArgs(args: readonly string[], opts: { multiline?: boolean } = {}): string {
  const quoted = args.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`));
  if (!opts.multiline) return quoted.join(' ');
  const lines: string[] = [];
  for (const [i, q] of quoted.entries()) {
    if (lines.length === 0 || args[i]!.startsWith('-')) lines.push(q);
    else lines[lines.length - 1] += ` ${q}`;
  }
  return lines.join(' \\\n  ');
}
