/**
 * virtio-blk constants (VIRTIO 1.2 §5.2): feature bits,
 * request types, status codes and the layout of struct virtio_blk_config (little-endian).
 */

// Feature bits (§5.2.3).
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

// Request types (§5.2.6).
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
/** Legacy synonym of FLUSH. */
export const VIRTIO_BLK_T_FLUSH_OUT = 5;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;
/** Legacy barrier flag: masked off the type, as QEMU does. */
export const VIRTIO_BLK_T_BARRIER = 0x8000_0000;

// Status byte values.
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Request header: le32 type, le32 reserved (ioprio), le64 sector. */
export const BLK_REQ_HDR_SIZE = 16;
/** Discard / write-zeroes segment: le64 sector, le32 num_sectors, le32 flags. */
export const BLK_SEGMENT_SIZE = 16;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** GET_ID answer size: NUL-padded ASCII, no NUL when exactly 20 bytes. */
export const VIRTIO_BLK_ID_BYTES = 20;
/** The protocol's sector unit, whatever the logical block size. */
export const SECTOR_SIZE = 512;

/** struct virtio_blk_config field offsets (§5.2.4). */
export const BlkConfig = {
  CAPACITY: 0,
  SIZE_MAX: 8,
  SEG_MAX: 12,
  BLK_SIZE: 20,
  PHYSICAL_BLOCK_EXP: 24,
  ALIGNMENT_OFFSET: 25,
  MIN_IO_SIZE: 26,
  OPT_IO_SIZE: 28,
  WRITEBACK: 32,
  NUM_QUEUES: 34,
  MAX_DISCARD_SECTORS: 36,
  MAX_DISCARD_SEG: 40,
  DISCARD_SECTOR_ALIGNMENT: 44,
  MAX_WRITE_ZEROES_SECTORS: 48,
  MAX_WRITE_ZEROES_SEG: 52,
  WRITE_ZEROES_MAY_UNMAP: 56,
  /** Whole struct including the secure-erase and zoned fields (96 bytes). */
  SIZE: 96,
} as const;
