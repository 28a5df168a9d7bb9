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
  /** Position of the `switch` keyword. */
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
  /** Position of the `interface` keyword. */
  pos: SourcePos;
}

export interface VmConfig {
  name: string;
  interfaces: InterfaceConfig[];
  /** Position of the `vm` keyword. */
  pos: SourcePos;
}

export interface Config {
  /** The configuration file name as given to the parser (used in messages). */
  file: string;
  /** Absolute directory where vhost-user sockets are created. */
  socketDir: string;
  switches: SwitchConfig[];
  vms: VmConfig[];
}

export const DEFAULT_MTU = 1500;
export const MIN_MTU = 68;
export const MAX_MTU = 65535;
/** Used when `socket dir` is absent; resolved like any relative path. */
export const DEFAULT_SOCKET_DIR = 'run';

export function findSwitch(cfg: Config, name: string): SwitchConfig | undefined {
  return cfg.switches.find((s) => s.name === name);
}

export function findVm(cfg: Config, name: string): VmConfig | undefined {
  return cfg.vms.find((v) => v.name === name);
}
