/**
 * Ethernet constants shared by the switch pipeline and the offload code (IEEE 802.3, 802.1Q, 802.1ad).
 */
/** Destination MAC, source MAC, ethertype. Shorter frames are runts. */
export const ETHER_HDR_LEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_RARP = 0x8035;
export const ETHERTYPE_IPV6 = 0x86dd;
/** 802.1Q tag protocol identifier: a tagged frame is 4 bytes longer. */
export const ETHERTYPE_VLAN = 0x8100;
/** 802.1ad (QinQ) service tag. */
export const ETHERTYPE_QINQ = 0x88a8;
