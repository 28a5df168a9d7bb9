/**
 * Public surface of the virtqueue layer: split ring, descriptor chains, spec constants, ordering primitives.
 * Devices import from here; tests may import the individual modules.
 * Layering: depends only on src/memory and src/util (docs/architecture.md §2).
 */
export * from './defs.js';
export { vringNeedEvent } from './event-idx.js';
export { fullFence, loadAvailIdx, storeUsedIdx, setTestHooks, getTestHooks, type TestHooks } from './barrier.js';
export { DescriptorChain, ChainError, MAX_CHAIN_SEGMENTS } from './descriptor-chain.js';
export { SplitQueue, type SplitQueueOptions } from './split-queue.js';
