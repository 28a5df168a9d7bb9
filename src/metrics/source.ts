/**
 * What the metrics collectors read: the daemon's live device and switch lists. Collectors take this at every
 * scrape and never keep a list, so devices added or removed by a reload appear and vanish on the next scrape.
 * Daemon satisfies it structurally; tests may pass a smaller object.
 */
import type { BlkPort, NetPort } from '../daemon.js';
import type { Port } from '../net/port.js';
import type { Switch } from '../net/switch.js';
import type { TapPort } from '../net/tap-port.js';

export interface MetricsSource {
  readonly netPorts: readonly NetPort[];
  readonly blkPorts: readonly BlkPort[];
  readonly vports: readonly TapPort[];
  readonly switches: ReadonlyMap<string, Switch>;
}

export type Labels = Readonly<Record<string, string>>;

/**
 * Label objects are cached per device and per switch port (weakly: they go with the device), so the Registry's
 * per-object formatting cache hits on every scrape after the first.
 */
const deviceCache = new WeakMap<NetPort | BlkPort, Labels>();
const portCache = new WeakMap<Port, Labels>();

/** vm, device, socket: the labels of every per-device series. */
export function deviceLabels(p: NetPort | BlkPort): Labels {
  let l = deviceCache.get(p);
  if (!l) deviceCache.set(p, (l = Object.freeze({ vm: p.vm, device: p.device.name, socket: p.server.socketPath })));
  return l;
}

/** switch, port: the labels of every per-switch-port series. */
export function portLabels(switchName: string, port: Port): Labels {
  let l = portCache.get(port);
  if (!l || l.switch !== switchName) portCache.set(port, (l = Object.freeze({ switch: switchName, port: port.name })));
  return l;
}

/** switch: the label of per-switch series. */
const switchCache = new WeakMap<Switch, Labels>();
export function switchLabels(sw: Switch): Labels {
  let l = switchCache.get(sw);
  if (!l) switchCache.set(sw, (l = Object.freeze({ switch: sw.name })));
  return l;
}
