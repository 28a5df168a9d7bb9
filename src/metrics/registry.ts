/** The metrics registry of one daemon: every vhostd collector plus prom-client's process and Node.js metrics. */
import { Registry, collectDefaultMetrics } from 'prom-client';
import { registerBlkMetrics } from './blk-metrics.js';
import { registerDeviceMetrics } from './device-metrics.js';
import { registerNetMetrics } from './net-metrics.js';
import { registerSwitchMetrics } from './switch-metrics.js';
import type { MetricsSource } from './source.js';

export function buildRegistry(src: MetricsSource, opts: { processMetrics?: boolean } = {}): Registry {
  const reg = new Registry();
  registerDeviceMetrics(reg, src);
  registerNetMetrics(reg, src);
  registerSwitchMetrics(reg, src);
  registerBlkMetrics(reg, src);
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: reg });
  return reg;
}
