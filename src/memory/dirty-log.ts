/**
 * DirtyLog: the live-migration dirty-page bitmap (vhost-user spec, "Migration"). The front-end shares it with
 * SET_LOG_BASE; while VHOST_F_LOG_ALL is negotiated every byte the back-end writes into guest memory (RX data,
 * used-ring entries and indices) marks its 4 KiB guest page: bit (gpa / 4096) of the bitmap. QEMU harvests the
 * bitmap with atomic exchanges while the guest runs, so bits are set with an atomic OR, and always AFTER the write
 * they describe (a bit set before the write could be harvested and cleared before the write lands).
 */
import type { SgList } from './sg-list.js';

export const VHOST_LOG_PAGE = 0x1000;

export class DirtyLog {
  /** Writes whose page lies past the end of the bitmap (a front-end bug; counted, never a crash). */
  outOfRange = 0;

  constructor(readonly bitmap: Uint8Array) {}

  /** Mark every page of guest-physical [gpa, gpa+len). */
  logRange(gpa: number, len: number): void {
    if (len <= 0) return;
    const first = Math.floor(gpa / VHOST_LOG_PAGE);
    const last = Math.floor((gpa + len - 1) / VHOST_LOG_PAGE);
    const bm = this.bitmap;
    for (let page = first; page <= last; page++) {
      const byte = Math.floor(page / 8);
      if (byte >= bm.length) {
        this.outOfRange++;
        return;
      }
      Atomics.or(bm, byte, 1 << (page & 7));
    }
  }

  /** Mark the pages behind the first `len` bytes of `sg` (the bytes just written). */
  logSg(sg: SgList, len: number): void {
    for (let i = 0; i < sg.count && len > 0; i++) {
      const n = sg.lens[i] < len ? sg.lens[i] : len;
      this.logRange(sg.gpas[i], n);
      len -= n;
    }
  }
}
