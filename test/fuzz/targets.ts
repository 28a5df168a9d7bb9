/** The fuzz targets by name (corpus in test/fuzz/corpus/<name>/). */
import type { FuzzTarget } from './engine.js';

export const TARGETS: Record<string, () => Promise<FuzzTarget>> = {
  'vhost-message': async () => (await import('./vhost-message.fuzz.js')).target,
  'descriptor-chain': async () => (await import('./descriptor-chain.fuzz.js')).target,
  'inflight': async () => (await import('./inflight.fuzz.js')).target,
  'blk-request': async () => (await import('./blk-request.fuzz.js')).target,
  'net-offload': async () => (await import('./net-offload.fuzz.js')).target,
  'qcow2-header': async () => (await import('./qcow2-header.fuzz.js')).target,
  'qcow2-open': async () => (await import('./qcow2-open.fuzz.js')).target,
  'selftest-crash': async () => (await import('./selftest.fuzz.js')).crashTarget,
  'selftest-hang': async () => (await import('./selftest.fuzz.js')).hangTarget,
};

/** The project's targets (the self-tests are left out of `npm run fuzz` without a name). */
export const PROJECT_TARGETS = Object.keys(TARGETS).filter((n) => !n.startsWith('selftest'));
