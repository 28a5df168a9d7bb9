/**
 * Scratch buffers of the addon's own: a memfd mapped with mmapShared, so the buffer has a copy handle and frame
 * copies between it and guest memory go through the copy batch (copy-batch.ts, one memmove each, no view
 * allocated per frame) like guest-to-guest copies do. For a port's preallocated buffers (the vport's read and write
 * buffers). The memfd is closed at once: the mapping keeps the memory.
 */
import type { NativeBinding } from '../native/types.js';
import { copyBatch } from './copy-batch.js';

export interface Scratch {
  readonly buffer: ArrayBuffer;
  readonly u8: Uint8Array;
  /** copyBurst handle (NativeBinding.mappingHandle); -1 when the binding gave none. */
  readonly handle: number;
}

export function mapScratch(native: NativeBinding, name: string, size: number): Scratch {
  const fd = native.memfdCreate(name, size);
  try {
    const buffer = native.mmapShared(fd, size, 0, true);
    return { buffer, u8: new Uint8Array(buffer), handle: native.mappingHandle(buffer) };
  } finally {
    native.close(fd);
  }
}

/** Unmap a scratch buffer (copies queued on it land first). Its views read as empty afterwards. */
export function unmapScratch(native: NativeBinding, s: Scratch): void {
  copyBatch.run();
  native.munmap(s.buffer);
}
