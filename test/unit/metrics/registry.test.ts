/**
 * The metrics registry against real devices without sockets: counters set on NetDevice, the Switch and
 * BlkDevice come out under the documented names and labels, the exposition parses (exposition.ts checks the
 * format), the latency histogram is cumulative with exact buckets, label values are escaped, and a device taken
 * out of the daemon's lists vanishes from the next scrape.
 */
import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { BlkDevice } from '../../../src/blk/blk-device.js';
import type { Disk } from '../../../src/blk/disk.js';
import type { BlkPort, NetPort } from '../../../src/daemon.js';
import { copyBatch } from '../../../src/memory/copy-batch.js';
import { buildRegistry } from '../../../src/metrics/registry.js';
import type { MetricsSource } from '../../../src/metrics/source.js';
import type { NativeBinding } from '../../../src/native/types.js';
import { NetDevice } from '../../../src/net/net-device.js';
import { Switch, type PortCounters } from '../../../src/net/switch.js';
import type { TapPort } from '../../../src/net/tap-port.js';
import { createLogger } from '../../../src/util/log.js';
import { VhostUserServer } from '../../../src/vhost-user/server.js';
import { matching, parseExposition, sampleValue } from './exposition.js';

const log = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
/** Servers are never listened on here: the binding is not touched. */
const native = {} as NativeBinding;

const memDisk = (size: number): Disk => ({
  size, readOnly: false, path: '/images/vm1.img', format: 'raw',
  read: async () => {}, write: async () => {}, flush: async () => {}, discard: async () => {}, writeZeroes: async () => {}, close: async () => {},
});

function fixture(): { src: MetricsSource & { netPorts: NetPort[]; blkPorts: BlkPort[] }; sw: Switch } {
  const sw = new Switch('s0', { mtu: 1500 });
  const net = (vm: string, mac: string, socket: string): NetPort => {
    const device = new NetDevice({ name: `${vm}.net0`, sw, log, mac });
    return { vm, index: 0, device, server: new VhostUserServer(native, socket, device, log) };
  };
  const disk = memDisk(1 << 20);
  const blkDev = new BlkDevice({ name: 'vm1.disk0', disk, log });
  const blk: BlkPort = { vm: 'vm1', index: 0, disk, device: blkDev, server: new VhostUserServer(native, '/run/vhostd/vm1.disk0.sock', blkDev, log) };
  const src = {
    netPorts: [net('vm1', 'fe:e1:bb:00:00:01', '/run/vhostd/vm1.net0.sock'), net('vm2', 'fe:e1:bb:00:00:02', '/run/x"y\\z.sock')],
    blkPorts: [blk],
    vports: [] as TapPort[],
    switches: new Map([['s0', sw]]),
  };
  return { src, sw };
}

const dev1 = { vm: 'vm1', device: 'vm1.net0', socket: '/run/vhostd/vm1.net0.sock' };
const disk1 = { vm: 'vm1', device: 'vm1.disk0', socket: '/run/vhostd/vm1.disk0.sock' };

describe('metrics registry', () => {
  test('copies the addon refused are one daemon-wide counter', async () => {
    const { src } = fixture();
    const before = copyBatch.refused;
    copyBatch.refused = 3;
    try {
      const m = parseExposition(await buildRegistry(src, { processMetrics: false }).metrics());
      expect(sampleValue(m, 'vhostd_net_copy_refused_total')).toBe(3);
    } finally {
      copyBatch.refused = before;
    }
  });

  test('device, switch and blk counters under their names and labels', async () => {
    const { src, sw } = fixture();
    const c = src.netPorts[0].device.counters;
    c.txFrames = 7;
    c.txBytes = 700;
    c.rxFrames = 3;
    c.rxBytes = 180;
    c.rxNoBuffer = 2;
    const pc = sw.counters(src.netPorts[0].device.id) as PortCounters;
    pc.rxFrames = 7;
    pc.floodFrames = 4;
    pc.dropMtu = 5;
    pc.dropHairpin = 1;
    const b = src.blkPorts[0].device.counters;
    b.reads = 11;
    b.writes = 12;
    b.getIds = 1;
    b.readBytes = 4096 * 11;
    b.badRequest = 2;
    const m = parseExposition(await buildRegistry(src, { processMetrics: false }).metrics());

    expect(sampleValue(m, 'vhostd_net_tx_frames_total', dev1)).toBe(7);
    expect(sampleValue(m, 'vhostd_net_tx_bytes_total', dev1)).toBe(700);
    expect(sampleValue(m, 'vhostd_net_rx_frames_total', dev1)).toBe(3);
    expect(sampleValue(m, 'vhostd_net_rx_bytes_total', dev1)).toBe(180);
    expect(sampleValue(m, 'vhostd_net_drops_total', { ...dev1, reason: 'rx-no-buffer' })).toBe(2);
    expect(sampleValue(m, 'vhostd_net_drops_total', { ...dev1, reason: 'tx-bad-chain' })).toBe(0);
    expect(sampleValue(m, 'vhostd_net_mtu_bytes', dev1)).toBe(1500);
    expect(sampleValue(m, 'vhostd_device_connected', { ...dev1, kind: 'net' })).toBe(0);
    expect(sampleValue(m, 'vhostd_device_connected', { ...disk1, kind: 'blk' })).toBe(0);

    const port = { switch: 's0', port: 'vm1.net0' };
    expect(sampleValue(m, 'vhostd_switch_port_rx_frames_total', port)).toBe(7);
    expect(sampleValue(m, 'vhostd_switch_port_flooded_frames_total', port)).toBe(4);
    expect(sampleValue(m, 'vhostd_switch_port_drops_total', { ...port, reason: 'mtu' })).toBe(5);
    expect(sampleValue(m, 'vhostd_switch_port_drops_total', { ...port, reason: 'hairpin' })).toBe(1);
    expect(sampleValue(m, 'vhostd_switch_port_drops_total', { switch: 's0', port: 'vm2.net0', reason: 'mtu' })).toBe(0);
    expect(sampleValue(m, 'vhostd_switch_port_mac_move_damped_total', port)).toBe(0);
    expect(sampleValue(m, 'vhostd_switch_ports', { switch: 's0' })).toBe(2);
    expect(sampleValue(m, 'vhostd_switch_mac_entries', { switch: 's0' })).toBe(0);

    expect(sampleValue(m, 'vhostd_blk_requests_total', { ...disk1, type: 'in' })).toBe(11);
    expect(sampleValue(m, 'vhostd_blk_requests_total', { ...disk1, type: 'out' })).toBe(12);
    expect(sampleValue(m, 'vhostd_blk_requests_total', { ...disk1, type: 'get_id' })).toBe(1);
    expect(sampleValue(m, 'vhostd_blk_read_bytes_total', disk1)).toBe(45056);
    expect(sampleValue(m, 'vhostd_blk_errors_total', { ...disk1, kind: 'bad-request' })).toBe(2);
    expect(m.get('vhostd_blk_requests_total')!.type).toBe('counter');
    expect(m.get('vhostd_blk_inflight_requests')!.type).toBe('gauge');
    // No session: no vring series at all (not zeros for 16 blk queues nobody uses).
    expect(matching(m, 'vhostd_vring_kicks_total')).toEqual([]);
  });

  test('latency histogram: exact cumulative buckets, _sum and _count per request type', async () => {
    const { src } = fixture();
    const lat = src.blkPorts[0].device.latency;
    lat.read.observe(0.00003);
    lat.read.observe(0.002);
    lat.read.observe(20);
    lat.flush.observe(0.01);
    const m = parseExposition(await buildRegistry(src, { processMetrics: false }).metrics());
    expect(m.get('vhostd_blk_request_duration_seconds')!.type).toBe('histogram');
    const read = { ...disk1, type: 'in' };
    const bucket = (le: string, l = read): number => sampleValue(m, 'vhostd_blk_request_duration_seconds_bucket', { ...l, le });
    expect(matching(m, 'vhostd_blk_request_duration_seconds_bucket', read)).toHaveLength(15); // 14 bounds and +Inf
    expect(bucket('0.000025')).toBe(0);
    expect(bucket('0.00005')).toBe(1);
    expect(bucket('0.001')).toBe(1);
    expect(bucket('0.0025')).toBe(2);
    expect(bucket('10')).toBe(2);
    expect(bucket('+Inf')).toBe(3);
    expect(sampleValue(m, 'vhostd_blk_request_duration_seconds_count', read)).toBe(3);
    expect(sampleValue(m, 'vhostd_blk_request_duration_seconds_sum', read)).toBeCloseTo(20.00203, 9);
    // A value on a bound falls in that bucket (le = "less than or equal").
    expect(bucket('0.01', { ...disk1, type: 'flush' })).toBe(1);
    expect(bucket('0.005', { ...disk1, type: 'flush' })).toBe(0);
    // A type without a request has no series yet (as a labelled prom-client Histogram).
    expect(matching(m, 'vhostd_blk_request_duration_seconds_count', disk1).map((s) => s.labels.type).sort()).toEqual(['flush', 'in']);
  });

  test('the JSON form (Registry.getMetricsAsJSON) carries every label on each value', async () => {
    const { src } = fixture();
    src.blkPorts[0].device.latency.read.observe(0.001);
    const json = await buildRegistry(src, { processMetrics: false }).getMetricsAsJSON();
    const drops = json.find((f) => f.name === 'vhostd_net_drops_total')!;
    expect(drops.values).toContainEqual(expect.objectContaining({ labels: { ...dev1, reason: 'rx-no-buffer' }, value: 0 }));
    const hist = json.find((f) => f.name === 'vhostd_blk_request_duration_seconds')!;
    expect(hist.values).toContainEqual(expect.objectContaining({ labels: { ...disk1, type: 'in', le: '0.001' }, value: 1 }));
  });

  test('label values are escaped: a socket path with a quote and a backslash comes back intact', async () => {
    const { src } = fixture();
    const text = await buildRegistry(src, { processMetrics: false }).metrics();
    expect(text).toContain('socket="/run/x\\"y\\\\z.sock"');
    const m = parseExposition(text);
    expect(sampleValue(m, 'vhostd_net_tx_frames_total', { vm: 'vm2' })).toBe(0);
    expect(matching(m, 'vhostd_net_tx_frames_total', { vm: 'vm2' })[0].labels.socket).toBe('/run/x"y\\z.sock');
  });

  test('the device list is read at every scrape: removed devices vanish, added ones appear', async () => {
    const { src, sw } = fixture();
    const reg = buildRegistry(src, { processMetrics: false });
    const removed = src.netPorts.splice(1, 1)[0];
    sw.removePort(removed.device);
    const disk = src.blkPorts.splice(0, 1)[0];
    disk.device.latency.write.observe(0.001);
    let m = parseExposition(await reg.metrics());
    expect(matching(m, 'vhostd_net_tx_frames_total').map((s) => s.labels.device)).toEqual(['vm1.net0']);
    expect(matching(m, 'vhostd_switch_port_rx_frames_total').map((s) => s.labels.port)).toEqual(['vm1.net0']);
    expect(matching(m, 'vhostd_blk_requests_total')).toEqual([]);
    expect(matching(m, 'vhostd_blk_request_duration_seconds_count')).toEqual([]);
    src.blkPorts.push(disk);
    m = parseExposition(await reg.metrics());
    expect(matching(m, 'vhostd_blk_requests_total', disk1)).toHaveLength(6);
    expect(sampleValue(m, 'vhostd_blk_request_duration_seconds_count', { ...disk1, type: 'out' })).toBe(1);
  });

  test('process metrics come with the vhostd ones and the whole scrape parses', async () => {
    const { src } = fixture();
    const m = parseExposition(await buildRegistry(src).metrics());
    expect(sampleValue(m, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(m.has('nodejs_eventloop_lag_seconds')).toBe(true);
    for (const name of m.keys()) expect(name).toMatch(/^(vhostd_|process_|nodejs_)/);
  });
});

describe('exposition parser', () => {
  test('refuses what Prometheus would refuse', () => {
    expect(() => parseExposition('x 1\n')).toThrow(/without a TYPE/);
    expect(() => parseExposition('# TYPE x counter\n# TYPE x counter\nx 1\n')).toThrow(/twice/);
    expect(() => parseExposition('# TYPE x counter\nx{a="1"} 1\nx{a="1"} 2\n')).toThrow(/duplicate/);
    expect(() => parseExposition('# TYPE x counter\nx{a="1} 1\n')).toThrow(/bad/);
    expect(() => parseExposition('# TYPE x counter\nx one\n')).toThrow(/bad value/);
    expect(() => parseExposition('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n')).toThrow(/cumulative/);
    expect(() => parseExposition('# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n')).toThrow(/count/);
    expect(() => parseExposition('# TYPE x counter\nx 1')).toThrow(/newline/);
    expect(parseExposition('# HELP x a\\nb\n# TYPE x gauge\nx{a="q\\"\\\\"} -Inf\n').get('x')!.samples[0]).toEqual({ name: 'x', labels: { a: 'q"\\' }, value: -Infinity });
  });
});
