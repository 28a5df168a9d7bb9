/**
 * The inflight area (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): GET_INFLIGHT_FD creates it, SET_INFLIGHT_FD maps it and
 * gives each vring its InflightQueue, so requests in flight survive a back-end restart.
 */
import type { NativeBinding } from '../native/types.js';
import { closeAll } from '../native/fd.js';
import { MAX_QUEUE_SIZE } from '../virtqueue/defs.js';
import { InflightQueue, inflightQueueBytes } from '../virtqueue/inflight.js';
import { VhostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { expectSize, readU64, type Message } from './message.js';
import { VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, hasBit } from './features.js';
import { checkAreaFd, expectFds } from './fd-checks.js';
import type { Vring } from './vring.js';

/** GET_INFLIGHT_FD's answer: the reply body, and the fd to attach or why there is none (mmap_size 0). */
export type InflightReply =
  | { reply: Uint8Array; fd: number; refusal: null }
  | { reply: Uint8Array; fd: null; refusal: { numQueues: number; queueSize: number; reason: string } };

/** The 24-byte inflight payload (not packed: 4 bytes of padding at the end). */
export function decodeInflight(msg: Message): { mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number } {
  expectSize(msg.payload, 24, msg.request);
  const dv = new DataView(msg.payload.buffer, msg.payload.byteOffset, 24);
  return {
    mmapSize: readU64(dv, 0, msg.request, 'mmap_size'),
    mmapOffset: readU64(dv, 8, msg.request, 'mmap_offset'),
    numQueues: dv.getUint16(16, true),
    queueSize: dv.getUint16(18, true),
  };
}

/** Why an inflight geometry cannot be served on a device with `queues` vrings, or null. */
export function inflightProblem(protocolFeatures: bigint, queues: number, numQueues: number, queueSize: number): string | null {
  if (!hasBit(protocolFeatures, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)) return 'INFLIGHT_SHMFD not negotiated';
  if (numQueues < 1 || numQueues > queues) return `num_queues ${numQueues} outside 1..${queues}`;
  if (queueSize < 1 || queueSize > MAX_QUEUE_SIZE || (queueSize & (queueSize - 1)) !== 0) return `queue_size ${queueSize} is not a power of two in 1..${MAX_QUEUE_SIZE}`;
  return null;
}

/** The inflight region one session has mapped (SET_INFLIGHT_FD), kept while the session lives. */
export class InflightArea {
  private buffer: ArrayBuffer | null = null;

  constructor(
    private readonly native: NativeBinding,
    private readonly log: Logger,
  ) {}

  /**
   * GET_INFLIGHT_FD: a new zeroed memfd of num_queues * ALIGN_UP(16 * queue_size + 16, 64) bytes on every
   * call, replied as {mmap_size, mmap_offset 0, num_queues, queue_size} with the fd attached.
   * A request we cannot serve gets mmap_size 0: QEMU then carries on without inflight tracking.
   */
  create(msg: Message, protocolFeatures: bigint, queues: number, kind: string): InflightReply {
    const req = decodeInflight(msg);
    const reply = new Uint8Array(24);
    const dv = new DataView(reply.buffer);
    dv.setUint16(16, req.numQueues, true);
    dv.setUint16(18, req.queueSize, true);
    const problem = inflightProblem(protocolFeatures, queues, req.numQueues, req.queueSize);
    if (problem) return { reply, fd: null, refusal: { numQueues: req.numQueues, queueSize: req.queueSize, reason: problem } };
    const size = req.numQueues * inflightQueueBytes(req.queueSize);
    const fd = this.native.memfdCreate(`vhostd-inflight-${kind}`, size);
    dv.setBigUint64(0, BigInt(size), true);
    this.log.debug({ numQueues: req.numQueues, queueSize: req.queueSize, size }, 'inflight region created');
    return { reply, fd, refusal: null };
  }

  /** SET_INFLIGHT_FD: map the region (QEMU re-sends the same memfd after a back-end restart). */
  install(msg: Message, protocolFeatures: bigint, vrings: readonly Vring[]): void {
    const req = decodeInflight(msg);
    expectFds(msg, 1);
    checkAreaFd(this.native, msg.request, msg.fds[0], req.mmapOffset, req.mmapSize, 'ERR_VU_PROTOCOL');
    const [fd] = msg.fds.splice(0);
    let buf: ArrayBuffer;
    try {
      const problem = inflightProblem(protocolFeatures, vrings.length, req.numQueues, req.queueSize) ??
        (req.mmapSize < req.numQueues * inflightQueueBytes(req.queueSize) ? `mmap_size ${req.mmapSize} smaller than ${req.numQueues} queues of ${req.queueSize}` : null) ??
        (vrings.some((v) => v.started) ? 'rings are running' : null);
      if (problem) throw new VhostError('ERR_VU_PROTOCOL', `SET_INFLIGHT_FD refused: ${problem}`);
      try {
        buf = this.native.mmapShared(fd, req.mmapSize, req.mmapOffset, true);
      } catch (err) {
        throw new VhostError('ERR_MEM_MAP', `SET_INFLIGHT_FD: cannot map the region: ${(err as Error).message}`, { cause: err });
      }
    } finally {
      closeAll(this.native, [fd]);
    }
    const old = this.buffer;
    this.buffer = buf;
    const per = inflightQueueBytes(req.queueSize);
    vrings.forEach((v, i) => {
      if (i < req.numQueues) {
        v.inflight = new InflightQueue(buf, i * per, req.queueSize);
        v.inflight.setDescNum(req.queueSize);
      } else v.inflight = null;
    });
    if (old) this.native.munmap(old);
    this.log.debug({ numQueues: req.numQueues, queueSize: req.queueSize }, 'inflight region mapped');
  }

  /** Whether the mapped region took a SIGBUS (native/sigbus.c). */
  faulted(): boolean {
    return this.buffer !== null && this.native.mappingFaults(this.buffer) > 0;
  }

  /** Detach the vrings' inflight queues, then unmap the region. */
  drop(vrings: readonly Vring[]): void {
    for (const v of vrings) v.inflight = null;
    if (this.buffer) this.native.munmap(this.buffer);
    this.buffer = null;
  }
}
