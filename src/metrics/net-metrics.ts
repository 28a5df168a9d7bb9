/**
 * virtio-net device metrics (the guest's view: tx = frames the guest sent, rx = frames delivered to it) and host
 * port (vport, TAP) metrics (the host's view, like `ip -s link`).
 */
import type { Registry } from 'prom-client';
import { copyBatch } from '../memory/copy-batch.js';
import type { NetCounters } from '../net/net-device.js';
import type { TapCounters } from '../net/tap-port.js';
import { NO_LABELS, counterFrom, gaugeFrom, label } from './collect.js';
import { deviceLabels, portLabels, type MetricsSource } from './source.js';

type Plain = 'txFrames' | 'txBytes' | 'rxFrames' | 'rxBytes' | 'rxSoftOffload';

/** NetDevice drop counters → reason label (the type forces a label for every drop counter). */
export const NET_DROP_REASONS: Readonly<Record<Exclude<keyof NetCounters, Plain>, string>> = {
  txBadChain: 'tx-bad-chain',
  txBadOffload: 'tx-bad-offload',
  rxNoBuffer: 'rx-no-buffer',
  rxBufferTooSmall: 'rx-buffer-too-small',
  rxBadChain: 'rx-bad-chain',
  rxBadOffload: 'rx-bad-offload',
};

/** TapPort drop counters → reason label. */
export const VPORT_DROP_REASONS: Readonly<Record<Exclude<keyof TapCounters, Plain>, string>> = {
  rxDropFull: 'full',
  rxDropTooBig: 'too-big',
  rxDropDown: 'down',
  rxDropError: 'error',
  rxBadOffload: 'bad-offload',
};

export function registerNetMetrics(reg: Registry, src: MetricsSource): void {
  const plain: [keyof NetCounters, string, string][] = [
    ['rxFrames', 'vhostd_net_rx_frames_total', 'Frames delivered to the guest (its RX queue)'],
    ['rxBytes', 'vhostd_net_rx_bytes_total', 'Bytes delivered to the guest (Ethernet frames, virtio-net header excluded)'],
    ['txFrames', 'vhostd_net_tx_frames_total', 'Frames the guest sent (its TX queue)'],
    ['txBytes', 'vhostd_net_tx_bytes_total', 'Bytes the guest sent (Ethernet frames, virtio-net header excluded)'],
    ['rxSoftOffload', 'vhostd_net_rx_soft_offload_frames_total', 'Frames whose checksum vhostd completed or that it segmented for this guest'],
  ];
  for (const [field, name, help] of plain) {
    counterFrom(reg, name, help, (emit) => {
      for (const p of src.netPorts) emit(deviceLabels(p), p.device.counters[field]);
    });
  }
  const drops = Object.entries(NET_DROP_REASONS).map(([field, reason]) => [field as keyof NetCounters, label('reason', reason)] as const);
  counterFrom(reg, 'vhostd_net_drops_total', 'Frames dropped by the virtio-net device, by reason', (emit) => {
    for (const p of src.netPorts) {
      const l = deviceLabels(p);
      for (const [field, reason] of drops) emit(l, p.device.counters[field], reason);
    }
  });
  // Never moves unless vhostd has a bug: TypeScript checked every op the addon refused (docs/security.md, "Copy handles").
  counterFrom(reg, 'vhostd_net_copy_refused_total', 'Frame copies the addon refused (a handle past its mapping, a range outside it): a vhostd bug; the frame reached the receiver incomplete', (emit) =>
    emit(NO_LABELS, copyBatch.refused),
  );
  gaugeFrom(reg, 'vhostd_net_mtu_bytes', 'MTU of the port (the switch MTU, or the smaller one the guest set)', (emit) => {
    for (const p of src.netPorts) emit(deviceLabels(p), p.device.mtu);
  });

  const vportPlain: [keyof TapCounters, string, string][] = [
    ['txFrames', 'vhostd_vport_tx_frames_total', 'Frames the host sent into the switch through the tap'],
    ['txBytes', 'vhostd_vport_tx_bytes_total', 'Bytes the host sent into the switch through the tap'],
    ['rxFrames', 'vhostd_vport_rx_frames_total', 'Frames written to the tap (received by the host)'],
    ['rxBytes', 'vhostd_vport_rx_bytes_total', 'Bytes written to the tap (received by the host)'],
  ];
  const vportLabels = (v: (typeof src.vports)[number]) => portLabels(v.switchName, v);
  for (const [field, name, help] of vportPlain) {
    counterFrom(reg, name, help, (emit) => {
      for (const v of src.vports) emit(vportLabels(v), v.counters[field]);
    });
  }
  const vportDrops = Object.entries(VPORT_DROP_REASONS).map(([field, reason]) => [field as keyof TapCounters, label('reason', reason)] as const);
  counterFrom(reg, 'vhostd_vport_drops_total', 'Frames to the host dropped at the tap, by reason', (emit) => {
    for (const v of src.vports) {
      const l = vportLabels(v);
      for (const [field, reason] of vportDrops) emit(l, v.counters[field], reason);
    }
  });
}
