/**
 * Connect/disconnect cycles for the leak benchmark: each cycle is the driver-side test client (FakeNetDriver over
 * FakeFrontend, a memfd guest RAM) doing DPDK virtio_user's full negotiation (features,
 * SET_MEM_TABLE with two region fds, call/kick eventfds, both rings addressed, started and enabled,
 * a GET_QUEUE_NUM round trip so the back-end has handled all of it, RX buffers posted), then closing the socket.
 *
 * Several lanes (one vhostd port each) run at once so the back-end is rarely idle waiting for this process. A lane
 * that reconnects before the daemon has seen its previous close is refused (one front-end per device) and retries.
 */
import { FakeNetDriver } from '../../test/helpers/fake-net-driver.js';

export interface CycleProgress {
  /** Cycles completed so far, all lanes. */
  done: number;
  /** Connections the daemon refused because the previous one was not yet gone; retried. */
  refused: number;
}

export interface CycleOptions {
  /** One socket per lane. */
  sockets: string[];
  total: number;
  /** Awaited every `every` cycles, with the calling lane's client still connected (the other lanes keep cycling). */
  every: number;
  onSample: (p: CycleProgress, socket: string) => Promise<void>;
}

const MAX_REFUSED_IN_A_ROW = 10_000;

/** Runs `total` cycles over the lanes; resolves with the final progress. */
export async function runCycles(o: CycleOptions): Promise<CycleProgress> {
  const p: CycleProgress = { done: 0, refused: 0 };
  let claimed = 0;
  let nextSample = o.every;
  const lane = async (socket: string): Promise<void> => {
    while (claimed < o.total) {
      claimed++;
      const d = await connect(socket, p);
      p.done++;
      // The sample hook sees this lane's driver still connected (rings running) and can inspect the daemon.
      if (p.done >= nextSample) {
        nextSample += o.every;
        await o.onSample({ ...p }, socket);
      }
      d.close();
    }
  };
  await Promise.all(o.sockets.map(lane));
  return p;
}

/** One negotiated client on `socket`, retrying while the daemon still holds the lane's previous connection. */
async function connect(socket: string, p: CycleProgress): Promise<FakeNetDriver> {
  for (let inARow = 0; ; inARow++) {
    const d = new FakeNetDriver({ socket, sequence: 'dpdk', queueSize: 256, regionSize: 1024 * 1024 });
    try {
      await d.start();
      return d;
    } catch (e) {
      d.close();
      if (!/closed the connection|ECONNRESET|EPIPE/.test((e as Error).message)) throw e;
      p.refused++;
      if (inARow >= MAX_REFUSED_IN_A_ROW) throw new Error(`${socket}: ${inARow} connections in a row refused`);
      await new Promise((r) => setImmediate(r));
    }
  }
}
