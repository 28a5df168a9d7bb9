/** virtio-blk device metrics: requests by type, bytes, errors by kind, requests in flight, latency histograms. */
import type { Registry } from 'prom-client';
import type { BlkCounters } from '../blk/blk-device.js';
import { BLK_IO_KINDS, type BlkIoKind } from '../blk/latency.js';
import { counterFrom, gaugeFrom, label } from './collect.js';
import { DeviceHistogram } from './histogram.js';
import { deviceLabels, type MetricsSource } from './source.js';

/** BlkCounters request fields → `type` label (virtio request names, VIRTIO 1.2 §5.2.6). */
const REQUEST_TYPES = (
  [
    ['reads', 'in'],
    ['writes', 'out'],
    ['flushes', 'flush'],
    ['getIds', 'get_id'],
    ['discards', 'discard'],
    ['writeZeroes', 'write_zeroes'],
  ] as const
).map(([field, type]) => [field as keyof BlkCounters, label('type', type)] as const);

/** BlkCounters error fields → `kind` label. */
const ERROR_KINDS = (
  [
    ['badChain', 'bad-chain'],
    ['badRequest', 'bad-request'],
    ['unsupported', 'unsupported'],
    ['ioErrors', 'io'],
    ['refused', 'refused'],
  ] as const
).map(([field, kind]) => [field as keyof BlkCounters, label('kind', kind)] as const);

const IO_TYPE: Readonly<Record<BlkIoKind, string>> = { read: 'in', write: 'out', flush: 'flush', discard: 'discard', 'write-zeroes': 'write_zeroes' };
const IO_TYPES = BLK_IO_KINDS.map((k) => [k, label('type', IO_TYPE[k])] as const);

export function registerBlkMetrics(reg: Registry, src: MetricsSource): void {
  counterFrom(reg, 'vhostd_blk_requests_total', 'virtio-blk requests accepted, by type (rejected ones count in vhostd_blk_errors_total)', (emit) => {
    for (const b of src.blkPorts) {
      const l = deviceLabels(b);
      for (const [field, type] of REQUEST_TYPES) emit(l, b.device.counters[field], type);
    }
  });
  counterFrom(reg, 'vhostd_blk_read_bytes_total', 'Bytes read from the image for the guest', (emit) => {
    for (const b of src.blkPorts) emit(deviceLabels(b), b.device.counters.readBytes);
  });
  counterFrom(reg, 'vhostd_blk_written_bytes_total', 'Bytes written to the image by the guest', (emit) => {
    for (const b of src.blkPorts) emit(deviceLabels(b), b.device.counters.writtenBytes);
  });
  counterFrom(
    reg,
    'vhostd_blk_errors_total',
    'virtio-blk requests that failed, by kind (bad-chain: returned unused; bad-request: IOERR before any I/O; unsupported: UNSUPP; io: the image I/O failed; refused: a write the image policy refused)',
    (emit) => {
      for (const b of src.blkPorts) {
        const l = deviceLabels(b);
        for (const [field, kind] of ERROR_KINDS) emit(l, b.device.counters[field], kind);
      }
    },
  );
  gaugeFrom(reg, 'vhostd_blk_inflight_requests', 'virtio-blk requests in flight', (emit) => {
    for (const b of src.blkPorts) emit(deviceLabels(b), b.device.counters.inflight);
  });
  new DeviceHistogram(reg, 'vhostd_blk_request_duration_seconds', 'virtio-blk request latency, from taking the chain to the I/O completing, by type', (emit) => {
    for (const b of src.blkPorts) {
      const l = deviceLabels(b);
      // A type's series start with its first request, as a labelled prom-client Histogram's do: a histogram is
      // 17 lines per device and type, and most guests never discard or write zeroes.
      for (const [k, type] of IO_TYPES) if (b.device.latency[k].count > 0) emit(l, type, b.device.latency[k]);
    }
  });
}
