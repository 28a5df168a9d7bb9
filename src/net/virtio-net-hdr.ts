/**
 * virtio-net header (VIRTIO 1.2 §5.1.6): 12 bytes with VERSION_1 or MRG_RXBUF, 10 bytes for legacy drivers
 * without either.
 *
 *   0 u8 flags | 1 u8 gso_type | 2 u16 hdr_len | 4 u16 gso_size | 6 u16 csum_start | 8 u16 csum_offset |
 *   10 u16 num_buffers (12-byte form only)
 */
export const VIRTIO_NET_HDR_LEN = 12;
export const VIRTIO_NET_HDR_LEN_LEGACY = 10;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** Offset of num_buffers in the 12-byte header. */
export const NUM_BUFFERS_OFFSET = 10;

export function netHdrLen(version1: boolean, mrgRxbuf: boolean): number {
  return version1 || mrgRxbuf ? VIRTIO_NET_HDR_LEN : VIRTIO_NET_HDR_LEN_LEGACY;
}

/** virtio_net_config (VIRTIO 1.2 §5.1.4): mac[6], status u16, max_virtqueue_pairs u16, mtu u16. */
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_CONFIG_LEN = 12;
