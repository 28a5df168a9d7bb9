/**
 * TapPort construction that fails half way (over a fake native binding): nothing is left behind. The caller
 * (openVport) closes the tap fd on a throw, so a port left on the switch would write guest frames to whatever
 * file or socket reuses that fd number, and the scratch mappings would stay mapped until a collection.
 */
import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import type { NativeBinding } from '../../../src/native/types.js';
import { Switch } from '../../../src/net/switch.js';
import { TapPort } from '../../../src/net/tap-port.js';
import { createLogger } from '../../../src/util/log.js';

const log = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function fakeNative(fail: 'watch' | 'second-map'): { native: NativeBinding; mapped: Set<ArrayBuffer> } {
  const mapped = new Set<ArrayBuffer>();
  let maps = 0;
  const native = {
    watch: () => {
      if (fail === 'watch') throw Object.assign(new Error('uv_poll_init: ENOMEM'), { code: 'ENOMEM' });
      return { close() {} };
    },
    read: () => -1,
    write: () => {
      throw new Error('no frame may be written');
    },
    close() {},
    memfdCreate: () => 98,
    mmapShared: (_fd: number, size: number) => {
      if (fail === 'second-map' && ++maps === 2) throw Object.assign(new Error('mmap: ENOMEM'), { code: 'ENOMEM' });
      const ab = new ArrayBuffer(size);
      mapped.add(ab);
      return ab;
    },
    mappingHandle: () => -1,
    munmap: (ab: ArrayBuffer) => {
      mapped.delete(ab);
    },
  } as unknown as NativeBinding;
  return { native, mapped };
}

describe('TapPort construction failures', () => {
  test('watch() throws: the port leaves the switch and both scratch buffers are unmapped', () => {
    const sw = new Switch('s');
    const { native, mapped } = fakeNative('watch');
    expect(() => new TapPort({ fd: 99, name: 'vport0', sw, log, native })).toThrow(/ENOMEM/);
    expect(sw.ports()).toHaveLength(0);
    expect(mapped.size).toBe(0);
  });

  test('the second scratch mapping fails: the first is unmapped and the switch never saw the port', () => {
    const sw = new Switch('s');
    const { native, mapped } = fakeNative('second-map');
    expect(() => new TapPort({ fd: 99, name: 'vport0', sw, log, native })).toThrow(/ENOMEM/);
    expect(sw.ports()).toHaveLength(0);
    expect(mapped.size).toBe(0);
  });
});
