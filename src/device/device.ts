/**
 * The contract between the vhost-user layer and device code (net, blk). Devices never touch the socket,
 * fds or vhost-user messages: they see started queues, kicks and a way to publish used entries.
 * (rust-vmm VhostUserBackend / libvhost-user VuDevIface.)
 */
import type { SplitQueue } from '../virtqueue/split-queue.js';

/** A started virtqueue as a device sees it. */
export interface DeviceQueue {
  /** Virtqueue index (net: RX = 2q, TX = 2q+1). */
  readonly index: number;
  readonly queue: SplitQueue;
  /** False once the ring was stopped or released (its queue is gone): late completions must be dropped. */
  readonly hasQueue: boolean;
  /**
   * Publish the used entries added since the last call (one used.idx store) and signal the guest through the
   * call eventfd if it asked for it (EVENT_IDX / NO_INTERRUPT). Marks the ring broken (err eventfd) if the
   * queue reported a fatal guest error.
   */
  publish(): void;
}

export interface VirtioDevice {
  readonly kind: 'net' | 'blk';
  /** Most virtqueues this device serves. */
  readonly maxQueues: number;
  /** Virtio features offered in GET_FEATURES (bit 30 is added by the vhost-user layer). */
  features(): bigint;
  /** GET_QUEUE_NUM answer (net: queue pairs; blk: queues). */
  queueNum(): number;
  /** SET_FEATURES: the features the driver accepted (without bit 30). */
  setFeatures(acked: bigint): void;
  /** The queue became started and enabled: serve it, and process what is already there (a kick may be lost). */
  queueStart(q: DeviceQueue): void;
  /**
   * The queue stopped or was disabled: take no more chains. A device with requests still in flight (blk) returns a
   * promise that settles once they have all completed and been published; until then the queue stays usable for
   * completions, and the vhost-user layer defers the GET_VRING_BASE reply (vhost-user spec, "Suspended device state").
   */
  queueStop(index: number): Promise<void> | void;
  /** The guest kicked the queue. */
  queueKick(index: number): void;
  /** GET_CONFIG: device config bytes [offset, offset+size), or null when the device has none. */
  getConfig(offset: number, size: number): Uint8Array | null;
  /** SET_CONFIG: true when accepted. */
  setConfig(offset: number, data: Uint8Array): boolean;
  /** NET_SET_MTU: null when accepted, else the reason for the refusal. */
  setMtu(mtu: number): string | null;
  /** The frontend disconnected: forget negotiated state (queues were already stopped). */
  reset(): void;
  /**
   * Guest memory is about to change (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG, SET_LOG_BASE): take no more chains
   * from any queue until resume(), and return a promise that settles once every request in flight (on any queue,
   * started or stopped) has completed and been published, or null when none is. Only devices whose requests outlive
   * the turn that took them (blk: I/O on the thread pool) implement it; net completes synchronously.
   */
  pause?(): Promise<void> | null;
  /** After pause(): take chains again, and process the queues that were kicked or started meanwhile. */
  resume?(): void;
  /** Settles when no request is in flight on any queue (null: none is). The connection's memory must outlive it. */
  whenIdle?(): Promise<void> | null;
}
