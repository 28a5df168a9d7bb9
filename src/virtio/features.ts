/**
 * Virtio feature bits (VIRTIO 1.2 §6, §5.1.3) and 64-bit feature helpers, shared by the devices and the
 * vhost-user layer. Feature math uses BigInt: bits above 31 (VERSION_1 = 32) must never pass through 32-bit
 * bitwise operators.
 */
export const bit = (n: number): bigint => 1n << BigInt(n);

export function hasBit(v: bigint, n: number): boolean {
  return (v & bit(n)) !== 0n;
}

// Device-independent feature bits (VIRTIO 1.2 §6).
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;

// virtio-net (VIRTIO 1.2 §5.1.3).
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;

const virtioNames: Record<number, string> = {
  0: 'CSUM', 1: 'GUEST_CSUM', 3: 'MTU', 5: 'MAC', 7: 'GUEST_TSO4', 8: 'GUEST_TSO6', 11: 'HOST_TSO4', 12: 'HOST_TSO6', 15: 'MRG_RXBUF', 16: 'STATUS', 21: 'GUEST_ANNOUNCE', 22: 'MQ',
  24: 'NOTIFY_ON_EMPTY', 26: 'LOG_ALL', 27: 'ANY_LAYOUT', 28: 'INDIRECT_DESC', 29: 'EVENT_IDX',
  30: 'PROTOCOL_FEATURES', 32: 'VERSION_1', 33: 'ACCESS_PLATFORM', 34: 'RING_PACKED', 35: 'IN_ORDER',
};

/** Names of the set bits, from `table` ("bitN" for unnamed ones). */
export function featureNames(v: bigint, table: Record<number, string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) if (v & bit(i)) out.push(table[i] ?? `bit${i}`);
  return out;
}

/** Virtio feature names for logs and status output. */
export const virtioFeatureNames = (v: bigint): string[] => featureNames(v, virtioNames);
