/**
 * A Prometheus histogram exported from fixed-bucket histograms kept by the devices (src/blk/latency.ts).
 * prom-client's Histogram can only be fed by observe(), one call per value with a label hash: fine for a web
 * request, not for a per-request data path. Rendered as _bucket (cumulative, le) / _sum / _count lines; the
 * series labels are shared (formatted once per series), each bucket line carries only `le`.
 */
import type { Registry } from 'prom-client';
import type { LatencyHistogram } from '../blk/latency.js';
import { NO_LABELS, ScrapedMetric, label, type Value } from './collect.js';
import type { Labels } from './source.js';

/** `shared`: the series' labels (a cached object), `extra`: a per-series label such as the request type. */
export type EmitHistogram = (shared: Labels, extra: Labels, h: LatencyHistogram) => void;

export class DeviceHistogram extends ScrapedMetric {
  readonly type = 'histogram';

  constructor(
    reg: Registry,
    name: string,
    help: string,
    private readonly fill: (emit: EmitHistogram) => void,
  ) {
    super(reg, name, help);
  }

  protected values(): Value[] {
    const values: Value[] = [];
    const bucket = `${this.name}_bucket`;
    const sum = `${this.name}_sum`;
    const count = `${this.name}_count`;
    this.fill((shared, extra, h) => {
      // The per-series label joins the shared ones here: one object per series and scrape, not per line.
      const sharedLabels = extra === NO_LABELS ? shared : { ...shared, ...extra };
      let cum = 0;
      for (let i = 0; i < h.bounds.length; i++) {
        cum += h.counts[i];
        values.push({ labels: label('le', String(h.bounds[i])), sharedLabels, value: cum, metricName: bucket });
      }
      values.push({ labels: label('le', '+Inf'), sharedLabels, value: h.count, metricName: bucket });
      values.push({ labels: NO_LABELS, sharedLabels, value: h.sum, metricName: sum });
      values.push({ labels: NO_LABELS, sharedLabels, value: h.count, metricName: count });
    });
    return values;
  }
}
