/**
 * Feature names for `status`: bits 0..23 are device-specific (VIRTIO 1.2 §6), so a virtio-blk device needs its
 * own table for them (§5.2.3); bits 24 and up are shared and named by src/virtio/features.ts.
 */
import { featureNames, virtioFeatureNames } from '../virtio/features.js';
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_GEOMETRY,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
} from '../blk/virtio-blk-defs.js';

const DEVICE_BITS = (1n << 24n) - 1n;

const blkNames: Record<number, string> = {
  [VIRTIO_BLK_F_SIZE_MAX]: 'SIZE_MAX',
  [VIRTIO_BLK_F_SEG_MAX]: 'SEG_MAX',
  [VIRTIO_BLK_F_GEOMETRY]: 'GEOMETRY',
  [VIRTIO_BLK_F_RO]: 'RO',
  [VIRTIO_BLK_F_BLK_SIZE]: 'BLK_SIZE',
  [VIRTIO_BLK_F_FLUSH]: 'FLUSH',
  [VIRTIO_BLK_F_TOPOLOGY]: 'TOPOLOGY',
  [VIRTIO_BLK_F_CONFIG_WCE]: 'CONFIG_WCE',
  [VIRTIO_BLK_F_MQ]: 'MQ',
  [VIRTIO_BLK_F_DISCARD]: 'DISCARD',
  [VIRTIO_BLK_F_WRITE_ZEROES]: 'WRITE_ZEROES',
};

/** Names of the set feature bits of a net or blk device. */
export function deviceFeatureNames(kind: 'net' | 'blk', v: bigint): string[] {
  if (kind === 'net') return virtioFeatureNames(v);
  return [...featureNames(v & DEVICE_BITS, blkNames), ...virtioFeatureNames(v & ~DEVICE_BITS)];
}
