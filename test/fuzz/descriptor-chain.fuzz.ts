/**
 * Fuzz target: DescriptorChain.walk (src/virtqueue/descriptor-chain.ts) over a fuzzed descriptor table and fuzzed
 * guest memory (direct and indirect chains; layout in chain-input.ts). Contract: walk never throws on guest data
 * (a bad chain is reported in chain.error), and a valid chain's sg lists stay inside guest memory and add up.
 */
import { DescriptorChain } from '../../src/virtqueue/descriptor-chain.js';
import { checkChain, CHAIN_DICTIONARY, CHAIN_MAX_LEN, decodeChainInput } from './chain-input.js';
import type { FuzzTarget } from './engine.js';

export const target: FuzzTarget = {
  name: 'descriptor-chain',
  maxLen: CHAIN_MAX_LEN,
  allowed: () => false,
  dictionary: CHAIN_DICTIONARY,
  run(data) {
    const input = decodeChainInput(data);
    if (input === null) return;
    const chain = new DescriptorChain(input.size);
    const ok = chain.walk(input.mem, input.table, input.size, input.head, input.indirectOk);
    if (ok !== (chain.error === null)) throw new Error(`walk returned ${ok} with error ${chain.error}`);
    checkChain(chain);
    // The chain object is reused for every request: a second walk must give the same answer.
    const again = chain.walk(input.mem, input.table, input.size, input.head, input.indirectOk);
    if (again !== ok) throw new Error('second walk of the same chain differs');
  },
};
