/**
 * Per-device connection and virtqueue metrics, for net and blk devices alike. Vring counters belong to the
 * front-end session: a reconnect starts them from 0 again, which Prometheus treats as a counter reset.
 */
import type { Registry } from 'prom-client';
import type { BlkPort, NetPort } from '../daemon.js';
import type { Vring } from '../vhost-user/vring.js';
import { counterFrom, gaugeFrom, label, type Emit } from './collect.js';
import { deviceLabels, type MetricsSource } from './source.js';

const NET = label('kind', 'net');
const BLK = label('kind', 'blk');

export function registerDeviceMetrics(reg: Registry, src: MetricsSource): void {
  const eachDevice = (emit: Emit, value: (p: NetPort | BlkPort) => number): void => {
    for (const p of src.netPorts) emit(deviceLabels(p), value(p), NET);
    for (const b of src.blkPorts) emit(deviceLabels(b), value(b), BLK);
  };
  gaugeFrom(reg, 'vhostd_device_connected', '1 when a vhost-user front-end (QEMU, DPDK) is connected to the device socket', (emit) =>
    eachDevice(emit, (p) => (p.server.connected ? 1 : 0)),
  );
  counterFrom(reg, 'vhostd_device_connections_total', 'Front-end connections accepted on the device socket', (emit) =>
    eachDevice(emit, (p) => p.server.connections),
  );
  counterFrom(reg, 'vhostd_device_connection_errors_total', 'Front-end connections dropped because of a vhost-user protocol error', (emit) =>
    eachDevice(emit, (p) => p.server.droppedConnections),
  );
  counterFrom(reg, 'vhostd_device_accept_errors_total', 'Times accept4 failed on the device socket (e.g. EMFILE) and accepting paused', (emit) =>
    eachDevice(emit, (p) => p.server.acceptErrors),
  );
  counterFrom(reg, 'vhostd_device_reply_backpressure_total', 'Times reading a front-end paused because it did not read its replies', (emit) =>
    eachDevice(emit, (p) => p.server.replyBackpressure),
  );
  counterFrom(reg, 'vhostd_device_refused_requests_total', 'vhost-user requests refused or ignored (NACKed, unsupported)', (emit) =>
    eachDevice(emit, (p) => p.server.refusedRequests),
  );
  counterFrom(reg, 'vhostd_device_memory_faults_total', 'Connections dropped because their shared memory raised SIGBUS (truncated or unfillable file)', (emit) =>
    eachDevice(emit, (p) => p.server.memoryFaults),
  );

  /** Rings of the current session that were ever set up (a blk device offers 16, a guest uses a few). */
  const eachRing = (emit: Emit, value: (v: Vring) => number): void => {
    const ring = (p: NetPort | BlkPort): void => {
      const rings = p.server.currentSession?.vrings;
      if (!rings) return;
      const shared = deviceLabels(p);
      for (const v of rings) if (v.started || v.enabled || v.kicks > 0) emit(shared, value(v), label('queue', String(v.index)));
    };
    src.netPorts.forEach(ring);
    src.blkPorts.forEach(ring);
  };
  counterFrom(reg, 'vhostd_vring_kicks_total', 'Kicks (guest notifications) received on the virtqueue in this front-end session', (emit) =>
    eachRing(emit, (v) => v.kicks),
  );
  counterFrom(reg, 'vhostd_vring_calls_total', 'Calls (interrupts) sent to the guest for the virtqueue in this front-end session', (emit) =>
    eachRing(emit, (v) => v.calls),
  );
  counterFrom(reg, 'vhostd_vring_fd_errors_total', 'Failed reads or writes of the kick, call or err eventfd in this front-end session', (emit) =>
    eachRing(emit, (v) => v.fdErrors),
  );
  gaugeFrom(reg, 'vhostd_vring_running', '1 when the virtqueue is started and enabled and being served', (emit) =>
    eachRing(emit, (v) => (v.serving ? 1 : 0)),
  );
  gaugeFrom(reg, 'vhostd_vring_broken', '1 when the guest broke the virtqueue (stopped until the device is reset)', (emit) =>
    eachRing(emit, (v) => (v.hasQueue && v.queue.broken ? 1 : 0)),
  );
}
