/**
 * Layering (docs/architecture.md "Layers"): every relative import under src/ must
 * point down or sideways, never up. Layers:
 *
 *   0  native/, util/, virtio/        shared: syscalls, errors, logging, spec constants
 *   1  memory/
 *   2  virtqueue/
 *   3  device/, net/, blk/
 *   4  vhost-user/, config/           (config/ may import only util/ and itself)
 *   5  daemon.ts, bin/, metrics/
 *
 * and the virtio-agnostic parts of the devices (net/switch, net/mac-table, net/mac, net/port, net/frame and
 * blk/qcow2/) import nothing from virtqueue/, vhost-user/, device/ or virtio/. A file outside these folders has no
 * layer and fails the test until it is given one here. Type-only imports count: they are design dependencies.
 * Imports are read with TypeScript's own pre-processor, so comments and strings never count as imports.
 * The checker is a pure function over (path → source) and tests itself on planted edges before the real tree.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, test } from 'vitest';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

/** Top folder (or top-level file) under src/ → layer. */
const LAYERS: Readonly<Record<string, number>> = {
  native: 0,
  util: 0,
  virtio: 0,
  memory: 1,
  virtqueue: 2,
  device: 3,
  net: 3,
  blk: 3,
  'vhost-user': 4,
  config: 4,
  'daemon.ts': 5,
  control: 5,
  bin: 5,
  metrics: 5,
};

/** Files that must not know virtio exists, and the folders they may therefore not import. */
const VIRTIO_AGNOSTIC = ['net/switch.ts', 'net/switch-control.ts', 'net/switch-counters.ts', 'net/switch-ports.ts', 'net/switch-rules.ts', 'net/mac-table.ts', 'net/mac.ts', 'net/port.ts', 'net/frame.ts', 'blk/qcow2/'];
const VIRTIO_FOLDERS = ['virtqueue', 'vhost-user', 'device', 'virtio'];

/** Folders config/ may import (besides itself). */
const CONFIG_MAY_IMPORT = ['util'];

/** Relative import specifiers of one TypeScript source (static, type-only, re-exports, dynamic, side-effect). */
export function relativeImports(source: string): string[] {
  return ts
    .preProcessFile(source, true, true)
    .importedFiles.map((f) => f.fileName)
    .filter((s) => s.startsWith('./') || s.startsWith('../'));
}

/** Layer of a path relative to src/ (posix separators), or null when it has none. */
export function layerOf(file: string): number | null {
  const top = file.split('/')[0];
  return LAYERS[top] ?? null;
}

/** Resolve a relative specifier written in `from` (both relative to src/) to a src-relative .ts path. */
function resolveImport(from: string, spec: string): string {
  const joined = join(dirname(from), spec).split('\\').join('/');
  return joined.endsWith('.js') ? joined.slice(0, -3) + '.ts' : joined;
}

const topOf = (file: string): string => file.split('/')[0];
const isAgnostic = (file: string): boolean =>
  VIRTIO_AGNOSTIC.some((p) => (p.endsWith('/') ? file.startsWith(p) : file === p));

/**
 * Every layering violation in a source tree, one line each: `from → to (reason)`. `files` maps src-relative
 * posix paths ('net/switch.ts') to their source text. Empty when the tree is clean.
 */
export function findViolations(files: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const [from, source] of files) {
    const lf = layerOf(from);
    if (lf === null) {
      out.push(`${from} (no layer: add its folder to LAYERS in test/unit/layering.test.ts)`);
      continue;
    }
    for (const spec of relativeImports(source)) {
      const to = resolveImport(from, spec);
      const edge = `${from} → ${to}`;
      if (to.startsWith('../') || to === '..') {
        out.push(`${edge} (imports from outside src/: '${spec}')`);
        continue;
      }
      if (!files.has(to)) {
        out.push(`${edge} (does not resolve to a .ts file under src/: '${spec}')`);
        continue;
      }
      const lt = layerOf(to);
      if (lt === null) continue; // reported once as "no layer" for the target itself
      if (lt > lf) out.push(`${edge} (upward: layer ${lf} imports layer ${lt})`);
      if (topOf(from) === 'config' && topOf(to) !== 'config' && !CONFIG_MAY_IMPORT.includes(topOf(to))) {
        out.push(`${edge} (config/ may import only ${CONFIG_MAY_IMPORT.join(', ')}/)`);
      }
      if (isAgnostic(from) && VIRTIO_FOLDERS.includes(topOf(to))) {
        out.push(`${edge} (virtio-agnostic file imports ${topOf(to)}/)`);
      }
    }
  }
  return out;
}

/** Every .ts file under dir, as src-relative posix paths → source text. */
function readTree(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith('.ts')) files.set(relative(dir, p).split('\\').join('/'), readFileSync(p, 'utf8'));
    }
  };
  walk(dir);
  return files;
}

describe('layering checker (self-test on synthetic trees)', () => {
  const base: [string, string][] = [
    ['util/errors.ts', 'export class VhostError extends Error {}'],
    ['native/types.ts', 'export interface NativeBinding {}'],
    ['memory/sg-list.ts', "import { VhostError } from '../util/errors.js';"],
    ['virtqueue/defs.ts', 'export const VIRTQ_DESC_F_NEXT = 1;'],
    ['virtqueue/split-queue.ts', "import type { SgList } from '../memory/sg-list.js';\nimport { VIRTQ_DESC_F_NEXT } from './defs.js';"],
    ['device/device.ts', "import type { SplitQueue } from '../virtqueue/split-queue.js';"],
    ['net/frame.ts', "import { SgList } from '../memory/sg-list.js';"],
    ['net/switch.ts', "import type { Frame } from './frame.js';"],
    ['net/net-device.ts', "import type { VirtioDevice } from '../device/device.js';\nimport { Frame } from './frame.js';"],
    ['vhost-user/features.ts', 'export const VIRTIO_F_VERSION_1 = 32;'],
    ['vhost-user/backend.ts', "import { NetDevice } from '../net/net-device.js';\nimport { VIRTIO_F_VERSION_1 } from './features.js';"],
    ['config/model.ts', "import { VhostError } from '../util/errors.js';"],
    ['daemon.ts', "import './vhost-user/backend.js';\nimport type { Config } from './config/model.js';"],
    ['bin/vhostd.ts', "import { Daemon } from '../daemon.js';"],
  ];
  const tree = (...extra: [string, string][]): Map<string, string> => {
    const m = new Map(base);
    for (const [k, v] of extra) m.set(k, v); // replaces a base file when the path repeats
    return m;
  };

  test('a clean tree of downward and same-folder edges has no violations', () => {
    expect(findViolations(tree())).toEqual([]);
  });

  test('extracts static, type-only, multi-line, re-export, dynamic and side-effect imports, not comments or strings', () => {
    const src = [
      "// import { x } from '../commented.js';",
      "/* import { y } from '../block.js'; */",
      "import type { A } from '../a.js';",
      'import {',
      '  B,',
      "} from '../b.js';",
      "export * from './c.js';",
      "export { D } from './d.js';",
      "const s = \"import z from '../string.js'\";",
      "const m = await import('./dyn.js');",
      "import './side.js';",
      "import { pino } from 'pino';",
      "import fs from 'node:fs';",
    ].join('\n');
    expect(relativeImports(src)).toEqual(['../a.js', '../b.js', './c.js', './d.js', './dyn.js', './side.js']);
  });

  test('detects a planted upward edge (device code importing vhost-user)', () => {
    const v = findViolations(
      tree(['net/net-device.ts', "import { VIRTIO_F_VERSION_1 } from '../vhost-user/features.js';"]),
    );
    expect(v).toEqual(['net/net-device.ts → vhost-user/features.ts (upward: layer 3 imports layer 4)']);
  });

  test('detects upward edges written as multi-line, type-only and re-export imports', () => {
    const v = findViolations(
      tree(
        ['memory/sg-list.ts', "import {\n  SplitQueue,\n} from '../virtqueue/split-queue.js';"],
        ['virtqueue/defs.ts', "import type { VirtioDevice } from '../device/device.js';"],
        ['device/device.ts', "export { VIRTIO_F_VERSION_1 } from '../vhost-user/features.js';"],
      ),
    );
    expect(v).toEqual([
      'memory/sg-list.ts → virtqueue/split-queue.ts (upward: layer 1 imports layer 2)',
      'virtqueue/defs.ts → device/device.ts (upward: layer 2 imports layer 3)',
      'device/device.ts → vhost-user/features.ts (upward: layer 3 imports layer 4)',
    ]);
  });

  test('flags a virtio-agnostic switch file importing virtio code, even downward', () => {
    const v = findViolations(tree(['net/switch.ts', "import { VIRTQ_DESC_F_NEXT } from '../virtqueue/defs.js';"]));
    expect(v).toEqual(['net/switch.ts → virtqueue/defs.ts (virtio-agnostic file imports virtqueue/)']);
  });

  test('flags config importing anything but util, even downward', () => {
    const v = findViolations(tree(['config/model.ts', "import { SgList } from '../memory/sg-list.js';"]));
    expect(v).toEqual(['config/model.ts → memory/sg-list.ts (config/ may import only util/)']);
  });

  test('flags unresolvable imports, imports from outside src/ and files without a layer', () => {
    const v = findViolations(
      tree(
        ['memory/sg-list.ts', "import { x } from './missing.js';\nimport { y } from '../../test/helpers/guest-ram.js';"],
        ['index.ts', "export * from './daemon.js';"],
      ),
    );
    expect(v).toEqual([
      "memory/sg-list.ts → memory/missing.ts (does not resolve to a .ts file under src/: './missing.js')",
      "memory/sg-list.ts → ../test/helpers/guest-ram.ts (imports from outside src/: '../../test/helpers/guest-ram.js')",
      'index.ts (no layer: add its folder to LAYERS in test/unit/layering.test.ts)',
    ]);
  });
});

describe('src/ layering', () => {
  test('every relative import under src/ points down or sideways (no upward edges)', () => {
    const files = readTree(SRC);
    expect(files.size).toBeGreaterThan(20); // guards against reading the wrong directory
    const violations = findViolations(files);
    expect(violations, `layering violations:\n  ${violations.join('\n  ')}\n`).toEqual([]);
  });
});
