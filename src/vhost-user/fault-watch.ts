/**
 * Drops the connection whose guest memory faulted. The addon maps a private zero page over a page of shared memory
 * that raised SIGBUS (the front-end truncated the file, or a hole could not be filled: native/sigbus.c) so that the
 * daemon lives; that device then works on memory the guest no longer shares, so its connection must end. One
 * process-wide timer reads the addon's fault total (one call) and, only when it moved, asks every server whether
 * its session's mappings faulted. Nothing runs on the data path.
 */
import type { NativeBinding } from '../native/types.js';

/** How often the fault total is read. */
export const FAULT_POLL_MS = 100;

interface FaultChecked {
  checkMemoryFaults(): void;
}

const servers = new Set<FaultChecked>();
let timer: NodeJS.Timeout | null = null;
let seen = 0;

export function watchFaults(native: NativeBinding, server: FaultChecked): void {
  servers.add(server);
  if (timer) return;
  seen = native.guestFaults();
  timer = setInterval(() => {
    const now = native.guestFaults();
    if (now === seen) return;
    seen = now;
    for (const s of servers) s.checkMemoryFaults();
  }, FAULT_POLL_MS);
  timer.unref();
}

export function unwatchFaults(server: FaultChecked): void {
  servers.delete(server);
  if (servers.size > 0 || !timer) return;
  clearInterval(timer);
  timer = null;
}
