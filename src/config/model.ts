/**
 * The validated configuration model: what parseConfig() returns once a vm.conf-style file has been
 * lexed, parsed and checked. Every name is resolved, every path is absolute, every MAC is canonical
 * (lower-case, two hex digits per octet), so consumers never re-validate.
 */

/** A 1-based position in the configuration text (columns count characters). */
export interface SourcePos {
  line: number;
  col: number;
}

export interface SwitchConfig {
  name: string;
  /** Largest Ethernet payload (68..65535), default 1500. */
  mtu: number;
  /** `maxaddr N`: MAC table size (dynamic + static); absent = DEFAULT_MAX_ADDR. */
  maxAddr?: number;
  /** `timeout N`: dynamic MAC lifetime in seconds (8..3600); absent = DEFAULT_TIMEOUT. */
  timeout?: number;
  /** `poll`: poll mode, the switch's poller spins with kicks off (docs/configuration.md); absent = event-driven. */
  poll?: boolean;
  /** `vport "NAME"`: host TAP port (stored only; implemented by the host-port work). */
  vport?: string;
  /** `static MAC on "PORT"` entries, in file order; absent when none. */
  statics?: StaticConfig[];
  /** `rule ...` filter rules, in file order; absent when none. */
  rules?: RuleConfig[];
  /** Position of the `switch` keyword. */
  pos: SourcePos;
}

/** `static MAC on "PORT"`. */
export interface StaticConfig {
  /** Canonical unicast MAC. */
  mac: string;
  /** Port name `<vm>.net<N>` (validated: exists and is on this switch). */
  port: string;
  pos: SourcePos;
}

/** `rule block|pass [in|out|in/out] on "PORT" [src MAC] [dst MAC] [arp|rarp [request|reply] [sha MAC] [spa IP] [tha MAC] [tpa IP]]`. */
export interface RuleConfig {
  action: 'block' | 'pass';
  dir: 'in' | 'out' | 'in/out';
  port: string;
  /** Canonical MACs (any address, group addresses included). */
  src?: string;
  dst?: string;
  arp?: { rarp: boolean; op?: 'request' | 'reply'; sha?: string; spa?: string; tha?: string; tpa?: string };
  pos: SourcePos;
}

export interface InterfaceConfig {
  /** 0-based position among the vm's interfaces; also the N in `<vm>.net<N>.sock`. */
  index: number;
  switchName: string;
  /** Canonical lower-case MAC, e.g. "fe:e1:bb:f1:c8:01". */
  lladdr: string;
  /** True when no lladdr was configured and the address was derived from the vm name + index. */
  lladdrGenerated: boolean;
  /** Absolute path of the vhost-user socket the daemon listens on. */
  socketPath: string;
  /** `locked lladdr MAC`: only frames from lladdr pass; lladdr is a static entry while the guest is connected. */
  locked?: boolean;
  /** `-learn` (false) / `learn`; absent = learn. */
  learn?: boolean;
  /** `-discover` (false) / `discover`; absent = discover. */
  discover?: boolean;
  /** `blocknonip`: only IPv4, IPv6, ARP, RARP in and out. */
  blockNonIp?: boolean;
  /** `span`: the port receives a copy of every frame the switch accepts, and sends nothing. */
  span?: boolean;
  /** `protected N[,N...]`: protected domain ids 1..31. */
  protected?: number[];
  /** `untagged VID|none`: PVID. */
  untagged?: number | 'none';
  /** `tagged LIST`: tagged VIDs (sorted, unique). */
  tagged?: number[];
  /** `maxaddr N`: this port's learn limit. */
  maxAddr?: number;
  /** Position of the `interface` keyword. */
  pos: SourcePos;
}

/** `disk "PATH" [format qcow2|raw] [readonly]`. */
export interface DiskConfig {
  /** 0-based position among the vm's disks; also the N in `<vm>.disk<N>.sock`. */
  index: number;
  /** Absolute path of the image (checked at parse time: exists, readable, writable unless readonly). */
  path: string;
  /** Configured format; absent = detected from the file (qcow2 magic, else raw). */
  format?: 'raw' | 'qcow2';
  readOnly: boolean;
  /** qcow2 L2 cache size in bytes (`cache SIZE`); absent = the default, which covers a 256 GiB disk. */
  cacheBytes?: number;
  /** Absolute path of the vhost-user socket the daemon listens on. */
  socketPath: string;
  /** Position of the `disk` keyword. */
  pos: SourcePos;
}

export interface VmConfig {
  name: string;
  interfaces: InterfaceConfig[];
  /** Disks in file order (absent in configurations built by hand before disks existed = none). */
  disks?: DiskConfig[];
  /**
   * `owner [user][:group]` inside the vm block: owner of this vm's device sockets, in place of `socket owner` for
   * each part it names (see vmSocketOwner). Absent = the sockets get `socket owner`.
   */
  owner?: SocketOwner;
  /** Position of the `vm` keyword. */
  pos: SourcePos;
}

/** `socket owner [user][:group]`: owner of the control socket and of every vhost-user socket (mode 0660). */
export interface SocketOwner {
  /** As written (absent = unchanged). */
  user?: string;
  group?: string;
  /** Resolved ids; -1 = leave unchanged (chown(2) semantics). */
  uid: number;
  gid: number;
}

/** `log level LEVEL` (pino level names). */
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

export interface Config {
  /** The configuration file name as given to the parser (used in messages). */
  file: string;
  /** Absolute directory where vhost-user sockets are created. */
  socketDir: string;
  /** Absolute path of the control socket (`control "PATH"`); absent in hand-built configs = `<socketDir>/vhostd.sock`. */
  controlPath?: string;
  /** `socket owner`: absent = sockets keep the daemon's user and group, mode 0660. */
  socketOwner?: SocketOwner;
  /** `metrics listen ADDRESS:PORT`: Prometheus exporter, off when absent. */
  metricsListen?: { host: string; port: number };
  /** `log level LEVEL`: absent = info (`vhostd -v` raises it). */
  logLevel?: LogLevel;
  /**
   * `backing dir "PATH"` (repeatable): absolute directories where qcow2 backing files may also lie, besides each
   * image's own directory tree. Absent = only the image's own directory tree.
   */
  backingDirs?: string[];
  /** `max guest memory SIZE`: most guest RAM bytes one front-end may map; absent = DEFAULT_MAX_GUEST_MEMORY. */
  maxGuestMemory?: number;
  switches: SwitchConfig[];
  vms: VmConfig[];
}

export const DEFAULT_MTU = 1500;
/** Switch `maxaddr` default and range (veb's default is 100: far too small for VM fleets). */
export const DEFAULT_MAX_ADDR = 4096;
export const MAX_MAX_ADDR = 1_048_576;
/** Switch `timeout` default and range (veb: 240, 8..3600). */
export const DEFAULT_TIMEOUT = 240;
export const MIN_TIMEOUT = 8;
export const MAX_TIMEOUT = 3600;
export const MIN_MTU = 68;
export const MAX_MTU = 65535;
/** `max guest memory` default and range. */
export const DEFAULT_MAX_GUEST_MEMORY = 2 ** 40;
export const MIN_MAX_GUEST_MEMORY = 2 ** 30;
export const MAX_MAX_GUEST_MEMORY = 2 ** 46;
/** Used when `socket dir` is absent; resolved like any relative path. */
export const DEFAULT_SOCKET_DIR = 'run';

/** The control socket path of a configuration (`control "PATH"`, default `<socket dir>/vhostd.sock`). */
export function controlSocketPath(cfg: Config): string {
  return cfg.controlPath ?? `${cfg.socketDir}/vhostd.sock`;
}

export function findSwitch(cfg: Config, name: string): SwitchConfig | undefined {
  return cfg.switches.find((s) => s.name === name);
}

export function findVm(cfg: Config, name: string): VmConfig | undefined {
  return cfg.vms.find((v) => v.name === name);
}

/**
 * The owner of vm `vm`'s device sockets: the vm's `owner`, where it names a user or a group, else the part of
 * `socket owner` (a vm `owner ":tenant1"` keeps the user of `socket owner` and replaces its group).
 */
export function vmSocketOwner(cfg: Config, vm: string): SocketOwner | undefined {
  const global = cfg.socketOwner;
  const own = cfg.vms.find((v) => v.name === vm)?.owner;
  if (!own) return global;
  const out: SocketOwner = { uid: -1, gid: -1 };
  const user = own.uid !== -1 ? own : global;
  const group = own.gid !== -1 ? own : global;
  if (user && user.uid !== -1) {
    out.uid = user.uid;
    if (user.user !== undefined) out.user = user.user;
  }
  if (group && group.gid !== -1) {
    out.gid = group.gid;
    if (group.group !== undefined) out.group = group.group;
  }
  return out;
}
