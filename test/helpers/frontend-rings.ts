/**
 * The short front-end sequences the hostile tests share: negotiate with REPLY_ACK (so every request is acked),
 * and start one ring at the start of a region. The daemon then uses the fds and memory under test.
 */
import {
  FrontendRequest as R,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  u64Payload,
  type RegionDescriptor,
} from '../../src/vhost-user/message.js';
import { VHOST_F_LOG_ALL, bit } from '../../src/vhost-user/features.js';
import type { FakeFrontend } from './fake-frontend.js';

/** Net TX, the queue a front-end kicks. */
export const TX_QUEUE = 1;
export const RING_NUM = 256;

/** Features and protocol features (REPLY_ACK included, so every request below is acked); LOG_ALL only if asked. */
export async function negotiate(fe: FakeFrontend, logAll = false): Promise<bigint> {
  const offered = await fe.getFeatures();
  const pf = await fe.getProtocolFeatures();
  await fe.setProtocolFeatures(pf);
  fe.setOwner();
  await fe.ack(R.SET_FEATURES, u64Payload(logAll ? offered : offered & ~bit(VHOST_F_LOG_ALL)));
  return offered;
}

export interface RingFds {
  kick: number;
  call: number;
  err: number;
}

/** Rings of TX_QUEUE at the start of region `r` (desc, avail +4 KiB, used +8 KiB), started and enabled. */
export async function startRing(fe: FakeFrontend, r: RegionDescriptor, fds: RingFds, logUsed = false): Promise<void> {
  await fe.ack(R.SET_VRING_NUM, encodeVringState({ index: TX_QUEUE, num: RING_NUM }));
  await fe.ack(R.SET_VRING_ADDR, encodeVringAddr({ index: TX_QUEUE, flags: logUsed ? 1 : 0, descUva: r.uva, availUva: r.uva + 0x1000, usedUva: r.uva + 0x2000, logGuestAddr: r.gpa + 0x2000 }));
  await fe.ack(R.SET_VRING_BASE, encodeVringState({ index: TX_QUEUE, num: 0 }));
  await fe.ack(R.SET_VRING_CALL, encodeVringFile(TX_QUEUE, false), [fds.call]);
  await fe.ack(R.SET_VRING_ERR, encodeVringFile(TX_QUEUE, false), [fds.err]);
  await fe.ack(R.SET_VRING_ENABLE, encodeVringState({ index: TX_QUEUE, num: 1 }));
  await fe.ack(R.SET_VRING_KICK, encodeVringFile(TX_QUEUE, false), [fds.kick]);
}
