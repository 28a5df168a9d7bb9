/**
 * The control protocol (docs/control.md): a Unix stream socket, one JSON request per line, one JSON
 * answer per line, in order. `{"ok":true,"result":...}` or `{"ok":false,"error":"message"}`. A malformed line gets
 * an error answer and the connection stays usable. Shared by the server (vhostd) and the client (vhostctl); the
 * result types are the contract scripts rely on with `vhostctl --json`.
 */
import type { ReloadReport } from '../daemon.js';

/** The `reload` result, as Daemon.reload() reports it. */
export type { ReloadReport };

/** Longest request line accepted (bytes, without the newline); a longer one is answered with an error. */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Every request, discriminated by `cmd`. */
export type ControlRequest =
  | { cmd: 'status' }
  | { cmd: 'show-switch'; switch: string }
  | { cmd: 'switch-flush'; switch: string }
  | { cmd: 'switch-static'; switch: string; mac: string; port: string }
  | { cmd: 'switch-deladdr'; switch: string; mac: string }
  | { cmd: 'qemu-args'; vm: string; tcg?: boolean; memory?: string }
  | { cmd: 'reload' }
  | { cmd: 'log-level'; level: string };

/** The command names. */
export type ControlCommand = ControlRequest['cmd'];

/** One answer line. */
export type ControlResponse = { ok: true; result: unknown } | { ok: false; error: string };

/** An error whose message is meant for the operator (sent as `{"ok":false,"error":message}`). */
export class ControlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ControlError';
  }
}

/** Fields each command takes: name → type ('string' required, 'string?' / 'boolean?' optional). */
const SHAPES: Readonly<Record<ControlCommand, Readonly<Record<string, 'string' | 'string?' | 'boolean?'>>>> = {
  status: {},
  'show-switch': { switch: 'string' },
  'switch-flush': { switch: 'string' },
  'switch-static': { switch: 'string', mac: 'string', port: 'string' },
  'switch-deladdr': { switch: 'string', mac: 'string' },
  'qemu-args': { vm: 'string', tcg: 'boolean?', memory: 'string?' },
  reload: {},
  'log-level': { level: 'string' },
};

/** The command names, in protocol order (for error messages). */
export const CONTROL_COMMANDS = Object.keys(SHAPES) as ControlCommand[];

/** Parse and check one request line; throws ControlError with what is wrong. Unknown extra fields are refused. */
export function parseRequest(line: string): ControlRequest {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    throw new ControlError(`malformed request: ${(err as Error).message} (expected one JSON object per line, like {"cmd":"status"})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ControlError('malformed request: expected a JSON object like {"cmd":"status"}');
  const o = v as Record<string, unknown>;
  if (typeof o.cmd !== 'string') throw new ControlError('malformed request: missing "cmd"');
  if (!Object.hasOwn(SHAPES, o.cmd)) throw new ControlError(`unknown command ${JSON.stringify(o.cmd)}, expected one of: ${CONTROL_COMMANDS.join(', ')}`);
  const shape = SHAPES[o.cmd as ControlCommand];
  for (const [k, val] of Object.entries(o)) {
    if (k === 'cmd') continue;
    const want = Object.hasOwn(shape, k) ? shape[k] : undefined;
    if (want === undefined) throw new ControlError(`${o.cmd}: unexpected field ${JSON.stringify(k)}`);
    if (typeof val !== want.replace('?', '')) throw new ControlError(`${o.cmd}: field ${JSON.stringify(k)} must be a ${want.replace('?', '')}`);
  }
  for (const [k, want] of Object.entries(shape)) {
    if (!want.endsWith('?') && !Object.hasOwn(o, k)) throw new ControlError(`${o.cmd}: missing field ${JSON.stringify(k)}`);
  }
  return o as ControlRequest;
}

// ---------------------------------------------------------------------------------------------------
// Results

/** One started or enabled virtqueue of a connected device. */
export interface QueueStatus {
  index: number;
  started: boolean;
  enabled: boolean;
  kicks: number;
  calls: number;
  /** Next avail index the back-end will read. */
  lastAvail: number;
  /** The queue hit a fatal guest error and is not served until the guest resets it. */
  broken: boolean;
}

/** One vm device (`status`). */
export interface DeviceStatus {
  vm: string;
  kind: 'net' | 'disk';
  /** `<vm>.net<N>` / `<vm>.disk<N>`. */
  name: string;
  socket: string;
  connected: boolean;
  /** Front-end connections accepted since start, and those dropped for a protocol error. */
  connections: number;
  droppedConnections: number;
  /** Negotiated virtio features (names, e.g. VERSION_1 MRG_RXBUF EVENT_IDX); empty when not connected. */
  features: string[];
  /** Negotiated vhost-user protocol features. */
  protocolFeatures: string[];
  queues: QueueStatus[];
  /** Device counters (guest's view). */
  counters: Record<string, number>;
  net?: {
    switch: string;
    mac: string;
    /** The port's MTU: the switch's, or the smaller one the guest set (NET_SET_MTU). */
    mtu: number;
    /** The switch's counters for this port (rx = from the guest); null if the port is not attached. */
    switchPort: Record<string, number> | null;
  };
  disk?: {
    image: string;
    format: string;
    readOnly: boolean;
    sizeBytes: number;
    /** Write cache on (1) or write-through (0), as the guest set it. */
    writeback: number;
    /** The disk I/O engine: "io_uring", or "threads" (node:fs on the libuv thread pool). */
    engine: string;
  };
}

/** `status`. */
export interface StatusResult {
  /** The configuration file served (`<default>` for the embedded one). */
  config: string;
  pid: number;
  devices: DeviceStatus[];
  /** `poll`: the switch runs in poll mode (docs/configuration.md). */
  switches: { name: string; mtu: number; poll: boolean; ports: number; macEntries: number }[];
}

/** One switch port (`show-switch`), with veb-like flags. */
export interface PortView {
  name: string;
  /** Port number inside the switch. */
  id: number;
  kind: 'vm' | 'vport';
  /** LEARNING, DISCOVER, BLOCKNONIP, LOCKED, SPAN (ifconfig(8) spelling). */
  flags: string[];
  protected: number[];
  /** PVID, or 'none' (untagged frames dropped). */
  untagged: number | 'none';
  tagged: number[];
  /** Learn limit of this port. */
  maxAddr?: number;
  connected: boolean;
  counters: Record<string, number>;
}

/** One MAC table row (`show-switch`, like `ifconfig veb0 addr`). */
export interface AddressView {
  mac: string;
  port: string;
  /** Seconds since the entry was last refreshed (0 for static entries). */
  ageSec: number;
  static: boolean;
}

/** `show-switch`. */
export interface SwitchView {
  name: string;
  mtu: number;
  maxAddr: number;
  timeoutSec: number;
  /** Poll mode (docs/configuration.md `poll`). */
  poll: boolean;
  ports: PortView[];
  addresses: AddressView[];
  totals: Record<string, number>;
}

/** `qemu-args`. */
export interface QemuArgsResult {
  vm: string;
  /** The argv to append to a qemu-system command line, one element per argument. */
  args: string[];
}

/** `log-level`. */
export interface LogLevelResult {
  previous: string;
  level: string;
}

/** `switch-flush`: dynamic entries removed; `switch-static` / `switch-deladdr`: the entry. */
export interface SwitchEditResult {
  switch: string;
  flushed?: number;
  mac?: string;
  port?: string;
}
