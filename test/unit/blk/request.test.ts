/** parseBlkRequest: every request shape and every named failure (VIRTIO 1.2 §5.2.6). */
import { describe, expect, test } from 'vitest';
import { SgList } from '../../../src/memory/sg-list.js';
import { BlkRequestError, parseBlkRequest, sgViews, writeStatus, type BlkLimits, type ChainView } from '../../../src/blk/request.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP } from '../../../src/blk/virtio-blk-defs.js';
import { blkHeader, blkSegments } from '../../helpers/fake-blk-driver.js';

const limits: BlkLimits = { capacitySectors: 2048, readOnly: false, maxDiscardSectors: 1024, maxDiscardSeg: 2, maxWriteZeroesSectors: 1024, maxWriteZeroesSeg: 2 };

/** A chain from byte arrays: readable parts then writable parts (each part one segment). */
function chain(readable: Uint8Array[], writableLens: number[], error: string | null = null): ChainView & { wbufs: Uint8Array[] } {
  const r = new SgList(32);
  const w = new SgList(32);
  for (const b of readable) r.push(b, 0, b.length);
  const wbufs = writableLens.map((l) => new Uint8Array(l + 4));
  wbufs.forEach((b, i) => w.push(b, 2, writableLens[i]));
  return { readable: r, writable: w, readableBytes: r.totalLen, writableBytes: w.totalLen, error, wbufs };
}

const hdr = (type: number, sector: number | bigint) => blkHeader(type, sector);

describe('parseBlkRequest', () => {
  test('IN: data is the writable bytes before the status, views of the guest buffers', () => {
    const c = chain([hdr(0, 8)], [512, 511, 2]);
    const r = parseBlkRequest(c, limits);
    expect(r).toMatchObject({ kind: 'read', offset: 4096, len: 1024 });
    if (r.kind !== 'read') throw new Error();
    expect(r.bufs.map((b) => b.length)).toEqual([512, 511, 1]);
    expect(r.bufs[0].buffer).toBe(c.wbufs[0].buffer);
  });

  test('OUT: data is the readable bytes after the header, header split across descriptors', () => {
    const h = hdr(1, 2);
    const c = chain([h.subarray(0, 5), h.subarray(5), new Uint8Array(1024)], [1]);
    expect(parseBlkRequest(c, limits)).toMatchObject({ kind: 'write', offset: 1024, len: 1024 });
  });

  test('legacy barrier bit is masked off the type', () => {
    expect(parseBlkRequest(chain([hdr(0x80000000, 0)], [513]), limits)).toMatchObject({ kind: 'read' });
  });

  test('FLUSH and FLUSH_OUT', () => {
    expect(parseBlkRequest(chain([hdr(4, 0)], [1]), limits).kind).toBe('flush');
    expect(parseBlkRequest(chain([hdr(5, 0)], [1]), limits).kind).toBe('flush');
    expect(parseBlkRequest(chain([hdr(4, 0)], [1]), { ...limits, readOnly: true }).kind).toBe('flush');
  });

  test('GET_ID: at most 20 bytes', () => {
    expect(parseBlkRequest(chain([hdr(8, 0)], [20, 1]), limits)).toMatchObject({ kind: 'get-id', len: 20 });
    expect(parseBlkRequest(chain([hdr(8, 0)], [64, 1]), limits)).toMatchObject({ kind: 'get-id', len: 20 });
    expect(parseBlkRequest(chain([hdr(8, 0)], [8, 1]), limits)).toMatchObject({ kind: 'get-id', len: 8 });
  });

  test('DISCARD / WRITE_ZEROES segments with the unmap flag', () => {
    const segs = blkSegments([{ sector: 1, count: 2 }, { sector: 10, count: 4, flags: 1 }]);
    expect(parseBlkRequest(chain([hdr(13, 0), segs], [1]), limits)).toEqual({
      kind: 'write-zeroes',
      segments: [{ offset: 512, len: 1024, unmap: false }, { offset: 5120, len: 2048, unmap: true }],
    });
    expect(parseBlkRequest(chain([hdr(11, 0), blkSegments([{ sector: 0, count: 8 }])], [1]), limits)).toMatchObject({ kind: 'discard' });
  });

  const failures: [string, ChainView, BlkLimits, string, number | 'drop'][] = [
    ['BAD_CHAIN', chain([hdr(0, 0)], [513], 'zero-length descriptor'), limits, BlkRequestError.BAD_CHAIN, 'drop'],
    ['NO_STATUS', chain([hdr(1, 0), new Uint8Array(512)], []), limits, BlkRequestError.NO_STATUS, 'drop'],
    ['SHORT_HEADER', chain([new Uint8Array(15)], [1]), limits, BlkRequestError.SHORT_HEADER, VIRTIO_BLK_S_IOERR],
    ['SHORT_HEADER (header in writable buffers)', chain([], [17]), limits, BlkRequestError.SHORT_HEADER, VIRTIO_BLK_S_IOERR],
    ['UNALIGNED_LENGTH (IN)', chain([hdr(0, 0)], [100, 1]), limits, BlkRequestError.UNALIGNED_LENGTH, VIRTIO_BLK_S_IOERR],
    ['UNALIGNED_LENGTH (OUT)', chain([hdr(1, 0), new Uint8Array(513)], [1]), limits, BlkRequestError.UNALIGNED_LENGTH, VIRTIO_BLK_S_IOERR],
    ['OUT_OF_RANGE (start past the end)', chain([hdr(0, 2048)], [513]), limits, BlkRequestError.OUT_OF_RANGE, VIRTIO_BLK_S_IOERR],
    ['OUT_OF_RANGE (straddles the end)', chain([hdr(1, 2047), new Uint8Array(1024)], [1]), limits, BlkRequestError.OUT_OF_RANGE, VIRTIO_BLK_S_IOERR],
    ['OUT_OF_RANGE (sector near 2^64)', chain([hdr(0, 0xffffffffffffffffn)], [513]), limits, BlkRequestError.OUT_OF_RANGE, VIRTIO_BLK_S_IOERR],
    ['READ_ONLY (OUT)', chain([hdr(1, 0), new Uint8Array(512)], [1]), { ...limits, readOnly: true }, BlkRequestError.READ_ONLY, VIRTIO_BLK_S_IOERR],
    ['READ_ONLY (WRITE_ZEROES)', chain([hdr(13, 0), blkSegments([{ sector: 0, count: 1 }])], [1]), { ...limits, readOnly: true }, BlkRequestError.READ_ONLY, VIRTIO_BLK_S_IOERR],
    ['READ_ONLY (DISCARD)', chain([hdr(11, 0), blkSegments([{ sector: 0, count: 1 }])], [1]), { ...limits, readOnly: true }, BlkRequestError.READ_ONLY, VIRTIO_BLK_S_IOERR],
    ['UNSUPPORTED_TYPE (99)', chain([hdr(99, 0)], [1]), limits, BlkRequestError.UNSUPPORTED_TYPE, VIRTIO_BLK_S_UNSUPP],
    ['UNSUPPORTED_TYPE (GET_LIFETIME, not offered)', chain([hdr(10, 0)], [7]), limits, BlkRequestError.UNSUPPORTED_TYPE, VIRTIO_BLK_S_UNSUPP],
    ['UNSUPPORTED_TYPE (SECURE_ERASE, not offered)', chain([hdr(14, 0), blkSegments([{ sector: 0, count: 1 }])], [1]), limits, BlkRequestError.UNSUPPORTED_TYPE, VIRTIO_BLK_S_UNSUPP],
    ['BAD_SEGMENTS (none)', chain([hdr(11, 0)], [1]), limits, BlkRequestError.BAD_SEGMENTS, VIRTIO_BLK_S_IOERR],
    ['BAD_SEGMENTS (not a multiple of 16)', chain([hdr(13, 0), new Uint8Array(20)], [1]), limits, BlkRequestError.BAD_SEGMENTS, VIRTIO_BLK_S_IOERR],
    ['TOO_MANY_SEGMENTS', chain([hdr(11, 0), blkSegments([{ sector: 0, count: 1 }, { sector: 1, count: 1 }, { sector: 2, count: 1 }])], [1]), limits, BlkRequestError.TOO_MANY_SEGMENTS, VIRTIO_BLK_S_IOERR],
    ['SEGMENT_TOO_LARGE', chain([hdr(13, 0), blkSegments([{ sector: 0, count: 1025 }])], [1]), limits, BlkRequestError.SEGMENT_TOO_LARGE, VIRTIO_BLK_S_IOERR],
    ['SEGMENT_FLAGS', chain([hdr(13, 0), blkSegments([{ sector: 0, count: 1, flags: 2 }])], [1]), limits, BlkRequestError.SEGMENT_FLAGS, VIRTIO_BLK_S_UNSUPP],
    ['DISCARD_UNMAP', chain([hdr(11, 0), blkSegments([{ sector: 0, count: 1, flags: 1 }])], [1]), limits, BlkRequestError.DISCARD_UNMAP, VIRTIO_BLK_S_UNSUPP],
    ['OUT_OF_RANGE (segment)', chain([hdr(11, 0), blkSegments([{ sector: 2040, count: 16 }])], [1]), limits, BlkRequestError.OUT_OF_RANGE, VIRTIO_BLK_S_IOERR],
    ['NO_ID_BUFFER', chain([hdr(8, 0)], [1]), limits, BlkRequestError.NO_ID_BUFFER, VIRTIO_BLK_S_IOERR],
  ];
  test.each(failures)('%s', (_name, c, l, error, status) => {
    const r = parseBlkRequest(c, l);
    if (status === 'drop') expect(r).toMatchObject({ kind: 'drop', error });
    else expect(r).toMatchObject({ kind: 'fail', error, status });
  });

  test('writeStatus writes the last byte of the last writable segment only', () => {
    const c = chain([hdr(0, 0)], [512, 3]);
    writeStatus(c, 7);
    expect(c.wbufs[1][2 + 2]).toBe(7);
    expect(c.wbufs[1][2 + 3]).toBe(0);
    expect(c.wbufs[0].every((b) => b === 0)).toBe(true);
  });

  test('sgViews covers a range across segments', () => {
    const c = chain([new Uint8Array(10), new Uint8Array(10)], []);
    expect(sgViews(c.readable, 5, 10).map((v) => v.length)).toEqual([5, 5]);
  });
});
