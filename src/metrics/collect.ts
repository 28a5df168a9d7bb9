/**
 * Metrics whose values are read at scrape time from the counters the devices and the switch already keep: the
 * data path pays nothing for metrics. Registered in a prom-client Registry, which renders the exposition.
 *
 * Why not prom-client's Counter/Gauge with a collect callback: those re-insert every series into a label hash at
 * every scrape and format every label of every line; with 40 VMs that is ~6000 lines and ~15 ms of CPU on the
 * daemon's event loop (the data path's thread) per scrape. Here, as prom-client's own Histogram does, a series'
 * fixed labels (vm, device, socket / switch, port) are one cached object passed as `sharedLabels`, which the
 * Registry formats once per object (its WeakMap cache), and only the varying label (reason, type, queue) is
 * formatted per line. Each scrape starts from nothing, so series of removed devices disappear.
 */
import type { Metric, Registry } from 'prom-client';
import type { Labels } from './source.js';

/** One sample: the series' shared labels (a cached object), its value, and a per-line label (a cached object). */
export type Emit = (shared: Labels, value: number, extra?: Labels) => void;

export interface Value {
  labels: Labels;
  sharedLabels: Labels;
  value: number;
  metricName?: string;
}

export interface MetricData {
  name: string;
  help: string;
  type: string;
  aggregator: string;
  values: Value[];
}

export const NO_LABELS: Labels = Object.freeze({}) as Labels;

/**
 * The members of prom-client's metric interface the Registry uses: name, help, type, getForPromString() for the
 * text format, get() for JSON, reset() for resetMetrics().
 */
export abstract class ScrapedMetric {
  abstract readonly type: string;
  readonly aggregator = 'sum';

  constructor(
    reg: Registry,
    readonly name: string,
    readonly help: string,
  ) {
    // prom-client's types name only its own metric classes; the Registry itself only reads the members above.
    reg.registerMetric(this as unknown as Metric);
  }

  protected abstract values(): Value[];

  /** Nothing to reset: the values live in the devices. */
  reset(): void {}

  async getForPromString(): Promise<MetricData> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() };
  }

  /** JSON form (Registry.getMetricsAsJSON): labels merged. */
  async get(): Promise<MetricData> {
    const data = await this.getForPromString();
    data.values = data.values.map((v) => ({ ...v, labels: { ...v.sharedLabels, ...v.labels }, sharedLabels: NO_LABELS }));
    return data;
  }
}

class SampledMetric extends ScrapedMetric {
  constructor(
    reg: Registry,
    name: string,
    help: string,
    readonly type: 'counter' | 'gauge',
    private readonly fill: (emit: Emit) => void,
  ) {
    super(reg, name, help);
  }

  protected values(): Value[] {
    const out: Value[] = [];
    this.fill((sharedLabels, value, labels = NO_LABELS) => out.push({ labels, sharedLabels, value }));
    return out;
  }
}

/** A counter filled from existing monotonic counters at every scrape. */
export function counterFrom(reg: Registry, name: string, help: string, fill: (emit: Emit) => void): void {
  new SampledMetric(reg, name, help, 'counter', fill);
}

/** A gauge filled from current state at every scrape. */
export function gaugeFrom(reg: Registry, name: string, help: string, fill: (emit: Emit) => void): void {
  new SampledMetric(reg, name, help, 'gauge', fill);
}

/** Frozen one-label objects, made once per (name, value): the per-line labels (reason, type, queue, kind). */
const oneLabel = new Map<string, Labels>();
export function label(name: string, value: string): Labels {
  const key = `${name}\0${value}`;
  let l = oneLabel.get(key);
  if (!l) oneLabel.set(key, (l = Object.freeze({ [name]: value })));
  return l;
}

/** camelCase → snake_case, for metric names derived from counter field names (macMoveDamped → mac_move_damped). */
export function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
