/**
 * Fuzz target: vhost-user message decoding (src/vhost-user/message.ts). Input = one message as it arrives on
 * the socket: the 12-byte header, then the payload (cut to the header's size, as the connection does). Every
 * payload codec runs on it, plus the inflight payload of GET/SET_INFLIGHT_FD. Contract: only VhostError;
 * and whatever decodes re-encodes to the same values.
 */
import { deepStrictEqual } from 'node:assert';
import {
  decodeConfig,
  decodeHeader,
  decodeMemTable,
  decodeSingleRegion,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeMemTable,
  encodeSingleRegion,
  encodeVringAddr,
  encodeVringState,
  HEADER_SIZE,
  readU64Big,
} from '../../src/vhost-user/message.js';
import { decodeInflight } from '../../src/vhost-user/inflight-fd.js';
import { VhostError } from '../../src/util/errors.js';
import type { FuzzTarget } from './engine.js';

function attempt<T>(f: () => T, check: (v: T) => void): void {
  let v: T;
  try {
    v = f();
  } catch (err) {
    if (err instanceof VhostError) return;
    throw err;
  }
  check(v);
}

export const target: FuzzTarget = {
  name: 'vhost-message',
  maxLen: HEADER_SIZE + 320,
  allowed: (err) => err instanceof VhostError,
  // Request ids and the flags word (version 1, NEED_REPLY) as they sit in the header.
  dictionary: [...Array.from({ length: 40 }, (_, i) => i + 1), 0x1, 0x9, 0x5].map((v) => new Uint8Array(new Uint32Array([v]).buffer)),
  run(data) {
    if (data.length < HEADER_SIZE) return;
    const h = decodeHeader(data.subarray(0, HEADER_SIZE));
    const p = data.subarray(HEADER_SIZE, HEADER_SIZE + h.size);
    const req = h.request;
    attempt(() => decodeMemTable(p, req), (v) => deepStrictEqual(decodeMemTable(encodeMemTable(v), req), v));
    attempt(() => decodeSingleRegion(p, req), (v) => deepStrictEqual(decodeSingleRegion(encodeSingleRegion(v), req), v));
    attempt(() => decodeVringState(p, req), (v) => deepStrictEqual(decodeVringState(encodeVringState(v), req), v));
    attempt(() => decodeVringAddr(p, req), (v) => deepStrictEqual(decodeVringAddr(encodeVringAddr(v), req), v));
    attempt(() => decodeVringFile(p, req), (v) => {
      if (v.index < 0 || v.index > 0xff) throw new Error(`vring file index ${v.index} outside 0..255`);
    });
    attempt(() => decodeConfig(p, req), (v) => {
      if (v.offset + v.size > 256 || v.data.length !== v.size) throw new Error(`config ${v.offset}+${v.size} (${v.data.length} bytes)`);
      deepStrictEqual(decodeConfig(encodeConfig(v.offset, v.flags, v.data), req), v);
    });
    attempt(() => readU64Big(p, req), () => {});
    attempt(() => decodeInflight({ ...h, payload: p, fds: [] }), (v) => {
      if (!Number.isSafeInteger(v.mmapSize) || !Number.isSafeInteger(v.mmapOffset)) throw new Error('inflight u64 not exact');
    });
  },
};
