/**
 * The hang matrix's frames (vq-torture.ts): A → B, Ethernet with ethertype 0x88b5 (local experimental), a u32
 * sequence number at byte 14 and a pattern derived from it, with a length derived from it too, so B checks every
 * byte of every frame without a copy of what A sent:
 *
 *   0 dst MAC (B) | 6 src MAC (A) | 12 0x88b5 | 14 seq u32 LE | 18.. byte i = (seq + i) & 0xff | len = frameLen(seq)
 *
 * FrameLedger keeps the sequence invariants: B gets every frame once, in order and intact, except frames sent before
 * a lifecycle event (guest reset, daemon restart) completed, which may be lost or, across a restart, duplicated.
 */

export const MAC_A = [0xfe, 0xe1, 0xba, 0x00, 0x00, 0x0a];
export const MAC_B = [0xfe, 0xe1, 0xba, 0x00, 0x00, 0x0b];

/** 60..315 bytes, and 1 frame in 64 at the 1514-byte maximum (a different copy length through the switch). */
export function frameLen(seq: number): number {
  const h = Math.imul(seq, 0x9e3779b1) >>> 0;
  return (h >>> 26) === 0 ? 1514 : 60 + ((h >>> 8) & 0xff);
}

/** Write frame `seq` at u8[o..]; returns its length. */
export function writeFrame(u8: Uint8Array, o: number, seq: number): number {
  const len = frameLen(seq);
  for (let i = 0; i < 6; i++) {
    u8[o + i] = MAC_B[i];
    u8[o + 6 + i] = MAC_A[i];
  }
  u8[o + 12] = 0x88;
  u8[o + 13] = 0xb5;
  u8[o + 14] = seq & 0xff;
  u8[o + 15] = (seq >>> 8) & 0xff;
  u8[o + 16] = (seq >>> 16) & 0xff;
  u8[o + 17] = seq >>> 24;
  for (let i = 18; i < len; i++) u8[o + i] = (seq + i) & 0xff;
  return len;
}

/** The sequence number of the frame at u8[o..], or -1 if the header is not one of ours. */
export function frameSeq(u8: Uint8Array, o: number, len: number): number {
  if (len < 18) return -1;
  for (let i = 0; i < 6; i++) if (u8[o + i] !== MAC_B[i] || u8[o + 6 + i] !== MAC_A[i]) return -1;
  if (u8[o + 12] !== 0x88 || u8[o + 13] !== 0xb5) return -1;
  return (u8[o + 14] | (u8[o + 15] << 8) | (u8[o + 16] << 16) | (u8[o + 17] << 24)) >>> 0;
}

/** Null if frame `seq` at u8[o..o+len) is intact, else what is wrong. */
export function checkFrame(u8: Uint8Array, o: number, len: number, seq: number): string | null {
  const want = frameLen(seq);
  if (len !== want) return `frame ${seq}: length ${len}, sent ${want}`;
  for (let i = 18; i < len; i++) {
    if (u8[o + i] !== ((seq + i) & 0xff)) return `frame ${seq}: byte ${i} is ${u8[o + i]}, sent ${(seq + i) & 0xff}`;
  }
  return null;
}

/** virtio-net header length with VERSION_1 (VIRTIO 1.2 §5.1.6); num_buffers is its last u16. */
const NET_HDR = 12;

export class FrameLedger {
  /** Next sequence number A sends. */
  nextSeq = 0;
  /** Highest sequence number B received. */
  lastRecv = -1;
  /** Frames below this were sent before the last lifecycle event completed: they may be lost or duplicated. */
  floorSeq = 0;
  /** Distinct frames B received. */
  received = 0;
  lostAcrossLifecycle = 0;
  duplicatesAcrossLifecycle = 0;
  /** (seq >>> 16) + 1 at seq & 0xffff for every frame received: tells a duplicate from a reordered frame. */
  private readonly seen = new Uint16Array(65536);

  constructor(private readonly violation: (what: string) => void) {}

  /** Frames in flight that must arrive (sent after the last lifecycle event, not received). */
  outstanding(): number {
    return this.nextSeq - Math.max(this.floorSeq, this.lastRecv + 1);
  }

  /** A lifecycle event completed and the rings settled: frames sent from now on may not be lost. */
  settle(): void {
    this.floorSeq = this.nextSeq;
  }

  /**
   * Check one received buffer (virtio-net header + frame, `usedLen` bytes at mem[o..]). `eventUnderWay`: a
   * lifecycle event has not completed, so everything sent so far may be lost or duplicated. True if it was new.
   */
  receive(mem: Uint8Array, o: number, usedLen: number, eventUnderWay: boolean): boolean {
    if (usedLen < NET_HDR + 18) {
      this.violation(`B.rx: used len ${usedLen} is shorter than a header and a frame`);
      return false;
    }
    if (mem[o + 10] !== 1 || mem[o + 11] !== 0) this.violation(`B.rx: num_buffers ${mem[o + 10] | (mem[o + 11] << 8)} for a frame that fits one buffer`);
    const f = o + NET_HDR;
    const flen = usedLen - NET_HDR;
    const seq = frameSeq(mem, f, flen);
    if (seq < 0 || seq >= this.nextSeq) {
      this.violation(`B.rx: a frame that A never sent (seq ${seq}, next to send ${this.nextSeq})`);
      return false;
    }
    const bad = checkFrame(mem, f, flen, seq);
    if (bad) this.violation(`B.rx: ${bad}`);
    const floor = eventUnderWay ? this.nextSeq : this.floorSeq;
    const tag = (seq >>> 16) + 1;
    if (seq <= this.lastRecv) {
      if (this.seen[seq & 0xffff] !== tag) this.violation(`B.rx: frame ${seq} after frame ${this.lastRecv} (reordered)`);
      else if (seq < floor) this.duplicatesAcrossLifecycle++;
      else this.violation(`B.rx: frame ${seq} delivered twice`);
      return false;
    }
    if (seq !== this.lastRecv + 1) {
      if (seq - 1 < floor) this.lostAcrossLifecycle += seq - 1 - this.lastRecv;
      else this.violation(`B.rx: frames ${this.lastRecv + 1}..${seq - 1} lost (sent after the last lifecycle event)`);
    }
    this.seen[seq & 0xffff] = tag;
    this.lastRecv = seq;
    this.received++;
    return true;
  }
}
