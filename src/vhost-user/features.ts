/**
 * vhost-user feature bits (vhost-user spec, "Protocol features"): bit 30 in the virtio feature space, LOG_ALL, and the
 * protocol features; it re-exports the virtio bits so vhost-user code has one import. Which protocol features a
 * device kind gets is decided here, in the vhost-user layer: devices know nothing of vhost-user.
 */
import { bit, featureNames } from '../virtio/features.js';

export * from '../virtio/features.js';

export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VHOST_F_LOG_ALL = 26;

// Protocol features (vhost-user spec, "Protocol features").
export const VHOST_USER_PROTOCOL_F_MQ = 0;
export const VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1;
export const VHOST_USER_PROTOCOL_F_RARP = 2;
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3;
export const VHOST_USER_PROTOCOL_F_NET_MTU = 4;
export const VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5;
export const VHOST_USER_PROTOCOL_F_CONFIG = 9;
export const VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12;
export const VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15;
export const VHOST_USER_PROTOCOL_F_STATUS = 16;

const protocolNames: Record<number, string> = {
  0: 'MQ', 1: 'LOG_SHMFD', 2: 'RARP', 3: 'REPLY_ACK', 4: 'NET_MTU', 5: 'BACKEND_REQ', 6: 'CROSS_ENDIAN',
  9: 'CONFIG', 12: 'INFLIGHT_SHMFD', 13: 'RESET_DEVICE', 15: 'CONFIGURE_MEM_SLOTS', 16: 'STATUS',
};

/** Protocol feature names for logs and status output. */
export const protocolFeatureNames = (v: bigint): string[] => featureNames(v, protocolNames);

/**
 * Protocol features offered per device kind. Both: MQ, REPLY_ACK, CONFIGURE_MEM_SLOTS, LOG_SHMFD (dirty
 * logging for live migration; without it QEMU adds a migration blocker). Blk adds CONFIG (QEMU requires it for
 * vhost-user-blk); net does not offer it, because QEMU 7.2 strips it for net with a warning. Net adds NET_MTU:
 * QEMU then sends the guest's MTU (host_mtu) with NET_SET_MTU and refuses to start the device on a NACK. Blk also
 * adds INFLIGHT_SHMFD (requests in flight survive a back-end restart); net never uses it.
 */
export function protocolFeaturesFor(kind: 'net' | 'blk'): bigint {
  const common =
    bit(VHOST_USER_PROTOCOL_F_MQ) |
    bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
    bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) |
    bit(VHOST_USER_PROTOCOL_F_LOG_SHMFD);
  return kind === 'net'
    ? common | bit(VHOST_USER_PROTOCOL_F_NET_MTU)
    : common | bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
}
