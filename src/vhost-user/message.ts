/**
 * vhost-user wire format (vhost-user spec): the 12-byte header, request ids with their spec names,
 * and codecs + validation for every payload vhostd reads. Nothing here touches a socket or any state:
 * the handler only ever sees payloads that passed the checks below (rust-vmm `is_valid`).
 * All integers are little-endian; u64 values are read as numbers and rejected at or above 2^53.
 */
import { VhostError } from '../util/errors.js';

export const HEADER_SIZE = 12;
/** Bits 0-1 of flags: protocol version 1. */
export const VHOST_USER_VERSION = 0x1;
export const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_REPLY_MASK = 0x4;
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** Replies carry exactly version|REPLY (QEMU and DPDK reject anything else). */
export const REPLY_FLAGS = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
/** Largest payload accepted (rust-vmm MAX_MSG_SIZE); net/blk payloads are a few hundred bytes at most. */
export const MAX_PAYLOAD = 0x1000;
export const VHOST_USER_VRING_IDX_MASK = 0xff;
export const VHOST_USER_VRING_NOFD_MASK = 0x100;
/** Most memory regions in SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const VHOST_MEMORY_BASELINE_NREGIONS = 8;
export const VHOST_USER_MAX_CONFIG_SIZE = 256;

/** Front-end → back-end requests (vhost-user spec, "Front-end message types"), spec names. */
export const FrontendRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

const requestNames = new Map<number, string>(Object.entries(FrontendRequest).map(([k, v]) => [v, k]));

/** Name of a request id for logs (libvhost-user vu_request_to_string). */
export function requestName(id: number): string {
  return requestNames.get(id) ?? `UNKNOWN(${id})`;
}

export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

/** A complete message as read from the socket: the fds arrived with it and belong to whoever handles it. */
export interface Message extends MessageHeader {
  payload: Uint8Array;
  fds: number[];
}

/** Decode and check the header. Throws a connection-fatal VhostError on a bad version or size. */
export function decodeHeader(b: Uint8Array): MessageHeader {
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_SIZE);
  const request = dv.getUint32(0, true);
  const flags = dv.getUint32(4, true);
  const size = dv.getUint32(8, true);
  if ((flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
    throw new VhostError('ERR_VU_BAD_HEADER', `bad header: version ${flags & VHOST_USER_VERSION_MASK} (flags 0x${flags.toString(16)}), expected 1 (${requestName(request)})`);
  }
  if (flags & VHOST_USER_REPLY_MASK) {
    throw new VhostError('ERR_VU_BAD_HEADER', `bad header: front-end sent a reply (flags 0x${flags.toString(16)}, ${requestName(request)})`);
  }
  if (size > MAX_PAYLOAD) {
    throw new VhostError('ERR_VU_BAD_SIZE', `oversize message: ${requestName(request)} payload ${size} bytes > ${MAX_PAYLOAD}`);
  }
  return { request, flags, size };
}

/** Encode a reply (header with flags exactly 0x5 + payload). */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, REPLY_FLAGS, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** Encode a request (used by the test frontend and the back-end channel). */
export function encodeRequest(request: number, payload: Uint8Array, needReply = false): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, VHOST_USER_VERSION | (needReply ? VHOST_USER_NEED_REPLY_MASK : 0), true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

function view(p: Uint8Array): DataView {
  return new DataView(p.buffer, p.byteOffset, p.byteLength);
}

function bad(req: number, what: string): VhostError {
  return new VhostError('ERR_VU_BAD_PAYLOAD', `${requestName(req)}: ${what}`);
}

/** Read a u64 as a number; values at or above 2^53 are rejected (docs/architecture.md §10). */
export function readU64(dv: DataView, off: number, req: number, field: string): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (hi >= 0x200000) throw bad(req, `${field} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} out of range`);
  return hi * 2 ** 32 + lo;
}

/** Feature bitmaps are full 64-bit values: BigInt (never 32-bit bitwise math). */
export function readU64Big(p: Uint8Array, req: number): bigint {
  expectSize(p, 8, req);
  return view(p).getBigUint64(0, true);
}

export function u64Payload(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

export function expectSize(p: Uint8Array, size: number, req: number): void {
  if (p.length !== size) throw new VhostError('ERR_VU_BAD_SIZE', `${requestName(req)}: payload ${p.length} bytes, expected ${size}`);
}

/** vring state: index + num (vhost-user spec, "A vring state description"). */
export interface VringState {
  index: number;
  num: number;
}

export function decodeVringState(p: Uint8Array, req: number): VringState {
  expectSize(p, 8, req);
  const dv = view(p);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

export function encodeVringState(s: VringState): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, s.index, true);
  dv.setUint32(4, s.num, true);
  return b;
}

/** vring addr (vhost-user spec, "A vring address description"): note the field order desc, used, avail. */
export interface VringAddr {
  index: number;
  flags: number;
  descUva: number;
  usedUva: number;
  availUva: number;
  logGuestAddr: number;
}

export function decodeVringAddr(p: Uint8Array, req: number): VringAddr {
  expectSize(p, 40, req);
  const dv = view(p);
  return {
    index: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    descUva: readU64(dv, 8, req, 'desc_user_addr'),
    usedUva: readU64(dv, 16, req, 'used_user_addr'),
    availUva: readU64(dv, 24, req, 'avail_user_addr'),
    logGuestAddr: readU64(dv, 32, req, 'log_guest_addr'),
  };
}

/** vring file (KICK/CALL/ERR): index in bits 0-7, NOFD in bit 8 (vhost-user spec, VHOST_USER_SET_VRING_KICK). */
export interface VringFile {
  index: number;
  noFd: boolean;
}

export function decodeVringFile(p: Uint8Array, req: number): VringFile {
  expectSize(p, 8, req);
  const dv = view(p);
  const lo = dv.getUint32(0, true);
  return { index: lo & VHOST_USER_VRING_IDX_MASK, noFd: (lo & VHOST_USER_VRING_NOFD_MASK) !== 0 };
}

/** A memory region as the front-end describes it (vhost-user spec, "Memory regions description"). */
export interface RegionDescriptor {
  gpa: number;
  size: number;
  uva: number;
  mmapOffset: number;
}

function decodeRegion(dv: DataView, off: number, req: number): RegionDescriptor {
  const r = {
    gpa: readU64(dv, off, req, 'guest_phys_addr'),
    size: readU64(dv, off + 8, req, 'memory_size'),
    uva: readU64(dv, off + 16, req, 'userspace_addr'),
    mmapOffset: readU64(dv, off + 24, req, 'mmap_offset'),
  };
  if (r.size === 0) throw bad(req, 'region of size 0');
  if (r.gpa + r.size > 2 ** 53 || r.uva + r.size > 2 ** 53 || r.mmapOffset + r.size > 2 ** 53) {
    throw bad(req, 'region wraps the address space');
  }
  return r;
}

/** SET_MEM_TABLE payload: u32 nregions, u32 padding, nregions × 32 bytes (QEMU sends exactly 8+32n). */
export function decodeMemTable(p: Uint8Array, req: number): RegionDescriptor[] {
  if (p.length < 8) throw new VhostError('ERR_VU_BAD_SIZE', `${requestName(req)}: payload ${p.length} bytes, expected at least 8`);
  const dv = view(p);
  const n = dv.getUint32(0, true);
  if (n === 0 || n > VHOST_MEMORY_BASELINE_NREGIONS) throw bad(req, `nregions ${n}, expected 1..${VHOST_MEMORY_BASELINE_NREGIONS}`);
  // QEMU sends 8+32n; older frontends send the full 8-entry table.
  if (p.length !== 8 + 32 * n && p.length !== 8 + 32 * VHOST_MEMORY_BASELINE_NREGIONS) {
    throw new VhostError('ERR_VU_BAD_SIZE', `${requestName(req)}: payload ${p.length} bytes for ${n} regions, expected ${8 + 32 * n}`);
  }
  const out: RegionDescriptor[] = [];
  for (let i = 0; i < n; i++) out.push(decodeRegion(dv, 8 + 32 * i, req));
  return out;
}

/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding + one region. */
export function decodeSingleRegion(p: Uint8Array, req: number): RegionDescriptor {
  expectSize(p, 40, req);
  return decodeRegion(view(p), 8, req);
}

/** GET_CONFIG / SET_CONFIG payload (vhost-user spec, "Virtio device config space"). */
export interface ConfigPayload {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}

export function decodeConfig(p: Uint8Array, req: number): ConfigPayload {
  if (p.length < 12) throw new VhostError('ERR_VU_BAD_SIZE', `${requestName(req)}: payload ${p.length} bytes, expected at least 12`);
  const dv = view(p);
  const offset = dv.getUint32(0, true);
  const size = dv.getUint32(4, true);
  const flags = dv.getUint32(8, true);
  if (size > VHOST_USER_MAX_CONFIG_SIZE || offset > VHOST_USER_MAX_CONFIG_SIZE || offset + size > VHOST_USER_MAX_CONFIG_SIZE) {
    throw bad(req, `config range offset ${offset} size ${size} exceeds ${VHOST_USER_MAX_CONFIG_SIZE}`);
  }
  if (p.length !== 12 + size) throw new VhostError('ERR_VU_BAD_SIZE', `${requestName(req)}: payload ${p.length} bytes, expected ${12 + size}`);
  return { offset, size, flags, data: p.subarray(12, 12 + size) };
}

export function encodeConfig(offset: number, flags: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(12 + data.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, data.length, true);
  dv.setUint32(8, flags, true);
  b.set(data, 12);
  return b;
}

/** Encoders used by the driver-side test client (the front-end role). */
export function encodeVringAddr(a: VringAddr): Uint8Array {
  const b = new Uint8Array(40);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, a.index, true);
  dv.setUint32(4, a.flags, true);
  dv.setBigUint64(8, BigInt(a.descUva), true);
  dv.setBigUint64(16, BigInt(a.usedUva), true);
  dv.setBigUint64(24, BigInt(a.availUva), true);
  dv.setBigUint64(32, BigInt(a.logGuestAddr), true);
  return b;
}

export function encodeMemTable(regions: RegionDescriptor[]): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => encodeRegionAt(dv, 8 + 32 * i, r));
  return b;
}

export function encodeSingleRegion(r: RegionDescriptor): Uint8Array {
  const b = new Uint8Array(40);
  encodeRegionAt(new DataView(b.buffer), 8, r);
  return b;
}

function encodeRegionAt(dv: DataView, off: number, r: RegionDescriptor): void {
  dv.setBigUint64(off, BigInt(r.gpa), true);
  dv.setBigUint64(off + 8, BigInt(r.size), true);
  dv.setBigUint64(off + 16, BigInt(r.uva), true);
  dv.setBigUint64(off + 24, BigInt(r.mmapOffset), true);
}

export function encodeVringFile(index: number, noFd: boolean): Uint8Array {
  return u64Payload(index | (noFd ? VHOST_USER_VRING_NOFD_MASK : 0));
}
