/**
 * Loads the vhost_native addon (native/, built by `npm run build:native`) once per process (docs/architecture.md §8).
 * The package root is found by walking up to package.json, because this file runs both as compiled JS
 * (build/src/native/) and as TypeScript under vitest (src/native/).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { join } from 'node:path';

import { VhostError } from '../util/errors.js';
import { packageRootFrom } from '../util/package-root.js';
import type { NativeBinding } from './types.js';

/** Every function the addon must export; a stale build that lacks one is rejected at load. */
const EXPORTS: readonly (keyof NativeBinding)[] = [
  'listenUnix', 'acceptUnix', 'connectUnix', 'recvMsg', 'sendMsg', 'mmapShared', 'munmap', 'memfdCreate',
  'eventfd', 'eventfdRead', 'eventfdWrite', 'watch', 'close', 'fdSize', 'fdStat', 'fence', 'tapOpen', 'read', 'write',
  'mappingFaults', 'mappingHandle', 'copyBurst',
];

let cached: NativeBinding | undefined;

function tryLoad(path: string): NativeBinding {
  const require = createRequire(import.meta.url);
  const mod = require(path) as Partial<NativeBinding>;
  const missing = EXPORTS.filter((name) => typeof mod[name] !== 'function');
  if (missing.length > 0) throw new Error(`stale build: missing exports ${missing.join(', ')}`);
  return mod as NativeBinding;
}

/**
 * The addon binding (cached). `injected` replaces it for the rest of the process (tests, bundling).
 * Throws one VhostError('ERR_NATIVE_LOAD') naming every path tried and why it failed.
 */
export function loadNative(injected?: NativeBinding): NativeBinding {
  if (injected) cached = injected;
  if (cached) return cached;
  if (os.endianness() !== 'LE') {
    throw new VhostError('ERR_NATIVE_LOAD', `vhost-user and virtio rings are little-endian; this host is ${os.endianness()}`);
  }
  const root = packageRootFrom(import.meta.url);
  const tried: string[] = [];
  for (const config of ['Release', 'Debug']) {
    const path = join(root, 'native', 'build', config, 'vhost_native.node');
    if (!existsSync(path)) {
      tried.push(`  ${path}: not found`);
      continue;
    }
    try {
      cached = tryLoad(path);
      return cached;
    } catch (err) {
      tried.push(`  ${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  throw new VhostError(
    'ERR_NATIVE_LOAD',
    `cannot load the vhost_native addon; tried:\n${tried.join('\n')}\nrun \`npm run build:native\``,
  );
}

/** Whether the addon loads here, and if not why (for skipping tests and for `vhostd --check`). */
export function nativeAvailable(): { ok: boolean; reason?: string } {
  try {
    loadNative();
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}
