/**
 * The Prometheus exporter against a live Daemon: FakeNetDrivers and a FakeBlkDriver on its sockets push known
 * traffic (100 unicast frames A→B, one broadcast B→A, one frame to a reserved address, 5 writes, 5 reads, a flush,
 * a GET_ID and one out-of-range read), then /metrics is scraped over HTTP and the exposition is parsed: every
 * counter has its exact value, the latency histogram counted each timed request, a reload makes removed devices
 * vanish and added ones appear, other paths are 404 and a busy port is refused with a message naming the address.
 * Last, the vhostd binary with `metrics listen` in its configuration serves the same, and refuses to start (exit 1,
 * sockets removed) when the address is taken.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { parseConfig } from '../../src/config/parser.js';
import { Daemon } from '../../src/daemon.js';
import { startMetrics, type MetricsServer } from '../../src/metrics/exporter.js';
import { createLogger } from '../../src/util/log.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK } from '../../src/blk/virtio-blk-defs.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { FakeBlkDriver } from '../helpers/fake-blk-driver.js';
import { waitFor } from '../helpers/backend-fixture.js';
import { VhostdProcess } from '../e2e/support/vhostd-process.js';
import { matching, parseExposition, sampleValue, type Family } from '../unit/metrics/exposition.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);
const M1 = 'fe:e1:bb:00:00:01';
const M2 = 'fe:e1:bb:00:00:02';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const IMAGE_BYTES = 4 * 1024 * 1024;
const log = createLogger({ level: 'warn', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

/** `ci` and `cb` appear in the second configuration only. */
const conf = (dir: string, withB: boolean): string => `socket dir "${dir}"
switch "s0" {}
vm "a" {
    interface { switch "s0"; lladdr ${M1} }
    disk "${dir}/a.img" format raw
}
${withB ? `vm "b" { interface { switch "s0"; lladdr ${M2} } }` : `vm "c" { interface { switch "s0" } }`}
`;

async function scrape(m: MetricsServer, urlPath = '/metrics', method = 'GET'): Promise<Response> {
  return fetch(`http://127.0.0.1:${m.port}${urlPath}`, { method });
}

async function metrics(m: MetricsServer): Promise<Map<string, Family>> {
  const res = await scrape(m);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  return parseExposition(await res.text());
}

describe.skipIf(!native.ok)('Prometheus metrics of a live daemon', () => {
  let dir = '';
  let daemon: Daemon | null = null;
  let server: MetricsServer | null = null;
  const closers: (() => void)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0)) c();
    await server?.close();
    server = null;
    await daemon?.stop();
    daemon = null;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(): Promise<void> {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-metrics-'));
    fs.writeFileSync(path.join(dir, 'a.img'), new Uint8Array(IMAGE_BYTES));
    daemon = new Daemon(parseConfig(conf(dir, true), 'metrics.conf', { baseDir: dir }), loadNative(), log);
    await daemon.openDisks();
    daemon.start();
    server = await startMetrics(daemon, { host: '127.0.0.1', port: 0 }, log, { processMetrics: false });
  }

  test('exact counters after known traffic, latency histogram, 404, and a reload that removes and adds devices', async () => {
    await start();
    const d = daemon!;
    const a = new FakeNetDriver({ socket: d.netPorts[0].server.socketPath, seed: 1 });
    const b = new FakeNetDriver({ socket: d.netPorts[1].server.socketPath, seed: 2 });
    const disk = new FakeBlkDriver({ socket: d.blkPorts[0].server.socketPath });
    closers.push(() => a.close(), () => b.close(), () => disk.close());
    await a.start();
    await b.start();
    await disk.realize();
    await disk.start();

    // B announces itself (flooded), so A's frames to M2 are known unicast.
    const hello = ethFrame(BCAST, M2, 60, 9);
    b.send(hello);
    expect(await a.waitRx(1)).toEqual([hello]);
    for (let i = 0; i < 100; i++) expect(a.send(ethFrame(M2, M1, 100, i))).toBe(true);
    a.send(ethFrame('01:80:c2:00:00:0e', M1, 60)); // LLDP address: never forwarded (802.1 reserved)
    expect(await b.waitRx(100)).toHaveLength(100);
    const sw = d.switches.get('s0')!;
    await waitFor(() => sw.counters(d.netPorts[0].device.id)!.dropReserved === 1, 'reserved drop counted');

    const data = new Uint8Array(4096).fill(0x5a);
    for (let i = 0; i < 5; i++) expect((await disk.write(8 * i, data)).status).toBe(VIRTIO_BLK_S_OK);
    for (let i = 0; i < 5; i++) expect((await disk.read(8 * i, 4096)).data).toEqual(data);
    expect((await disk.flush()).status).toBe(VIRTIO_BLK_S_OK);
    expect((await disk.getId()).status).toBe(VIRTIO_BLK_S_OK);
    expect((await disk.read(IMAGE_BYTES / 512, 512)).status).toBe(VIRTIO_BLK_S_IOERR); // past the end

    let m = await metrics(server!);
    const netA = { vm: 'a', device: 'a.net0', socket: path.join(dir, 'a.net0.sock') };
    const netB = { vm: 'b', device: 'b.net0', socket: path.join(dir, 'b.net0.sock') };
    const blk = { vm: 'a', device: 'a.disk0', socket: path.join(dir, 'a.disk0.sock') };
    // Device view (the guest's: tx = sent by the guest).
    expect(sampleValue(m, 'vhostd_net_tx_frames_total', netA)).toBe(101);
    expect(sampleValue(m, 'vhostd_net_tx_bytes_total', netA)).toBe(100 * 100 + 60);
    expect(sampleValue(m, 'vhostd_net_rx_frames_total', netA)).toBe(1);
    expect(sampleValue(m, 'vhostd_net_rx_bytes_total', netA)).toBe(60);
    expect(sampleValue(m, 'vhostd_net_tx_frames_total', netB)).toBe(1);
    expect(sampleValue(m, 'vhostd_net_rx_frames_total', netB)).toBe(100);
    expect(sampleValue(m, 'vhostd_net_rx_bytes_total', netB)).toBe(100 * 100);
    for (const s of matching(m, 'vhostd_net_drops_total')) expect(s.value, JSON.stringify(s.labels)).toBe(0);
    // Switch view (rx = into the switch).
    const portA = { switch: 's0', port: 'a.net0' };
    const portB = { switch: 's0', port: 'b.net0' };
    expect(sampleValue(m, 'vhostd_switch_port_rx_frames_total', portA)).toBe(101);
    expect(sampleValue(m, 'vhostd_switch_port_flooded_frames_total', portA)).toBe(0);
    expect(sampleValue(m, 'vhostd_switch_port_tx_frames_total', portA)).toBe(1);
    expect(sampleValue(m, 'vhostd_switch_port_drops_total', { ...portA, reason: 'reserved' })).toBe(1);
    expect(sampleValue(m, 'vhostd_switch_port_rx_frames_total', portB)).toBe(1);
    expect(sampleValue(m, 'vhostd_switch_port_flooded_frames_total', portB)).toBe(1);
    expect(sampleValue(m, 'vhostd_switch_port_tx_frames_total', portB)).toBe(100);
    expect(sampleValue(m, 'vhostd_switch_port_mac_learned_total', portA)).toBe(1);
    expect(matching(m, 'vhostd_switch_port_drops_total').reduce((n, s) => n + s.value, 0)).toBe(1);
    expect(sampleValue(m, 'vhostd_switch_mac_entries', { switch: 's0' })).toBe(2);
    // Connections and rings.
    expect(sampleValue(m, 'vhostd_device_connected', { ...netA, kind: 'net' })).toBe(1);
    expect(sampleValue(m, 'vhostd_device_connections_total', { ...netB, kind: 'net' })).toBe(1);
    expect(sampleValue(m, 'vhostd_device_connected', { ...blk, kind: 'blk' })).toBe(1);
    expect(sampleValue(m, 'vhostd_vring_running', { ...netA, queue: '1' })).toBe(1);
    expect(sampleValue(m, 'vhostd_vring_broken', { ...netA, queue: '1' })).toBe(0);
    // Every interrupt the driver saw (on either queue) was a call the device sent (eventfd reads coalesce, so ≥).
    expect(sampleValue(m, 'vhostd_vring_calls_total', { ...netB, queue: '0' })).toBeGreaterThanOrEqual(1);
    expect(matching(m, 'vhostd_vring_calls_total', netB).reduce((n, s) => n + s.value, 0)).toBeGreaterThanOrEqual(b.calls);
    expect(sampleValue(m, 'vhostd_vring_kicks_total', { ...netA, queue: '1' })).toBeGreaterThanOrEqual(1);
    expect(matching(m, 'vhostd_vring_kicks_total', blk).map((s) => s.labels.queue)).toEqual(['0']); // 1 of 16 queues in use
    // Blk.
    const req = (type: string): number => sampleValue(m, 'vhostd_blk_requests_total', { ...blk, type });
    expect([req('in'), req('out'), req('flush'), req('get_id'), req('discard'), req('write_zeroes')]).toEqual([5, 5, 1, 1, 0, 0]);
    expect(sampleValue(m, 'vhostd_blk_read_bytes_total', blk)).toBe(5 * 4096);
    expect(sampleValue(m, 'vhostd_blk_written_bytes_total', blk)).toBe(5 * 4096);
    expect(sampleValue(m, 'vhostd_blk_errors_total', { ...blk, kind: 'bad-request' })).toBe(1);
    expect(sampleValue(m, 'vhostd_blk_errors_total', { ...blk, kind: 'io' })).toBe(0);
    expect(sampleValue(m, 'vhostd_blk_inflight_requests', blk)).toBe(0);
    const count = (type: string): number => sampleValue(m, 'vhostd_blk_request_duration_seconds_count', { ...blk, type });
    expect([count('in'), count('out'), count('flush')]).toEqual([5, 5, 1]);
    expect(matching(m, 'vhostd_blk_request_duration_seconds_count', { ...blk, type: 'discard' })).toEqual([]); // none yet
    expect(sampleValue(m, 'vhostd_blk_request_duration_seconds_sum', { ...blk, type: 'in' })).toBeGreaterThan(0);

    // Not the metrics path, not GET.
    expect((await scrape(server!, '/')).status).toBe(404);
    expect((await scrape(server!, '/metricsx')).status).toBe(404);
    expect((await scrape(server!, '/metrics', 'POST')).status).toBe(405);

    // Reload: vm b goes, vm c comes; a's devices and their counters stay.
    const report = await d.reload(parseConfig(conf(dir, false), 'metrics.conf', { baseDir: dir }));
    expect(report.removed).toContain('b.net0');
    expect(report.added).toContain('c.net0');
    m = await metrics(server!);
    expect(matching(m, 'vhostd_net_tx_frames_total').map((s) => s.labels.device).sort()).toEqual(['a.net0', 'c.net0']);
    expect(matching(m, 'vhostd_switch_port_rx_frames_total').map((s) => s.labels.port).sort()).toEqual(['a.net0', 'c.net0']);
    expect(matching(m, 'vhostd_device_connected', { vm: 'b' })).toEqual([]);
    expect(sampleValue(m, 'vhostd_net_tx_frames_total', { device: 'c.net0' })).toBe(0);
    expect(sampleValue(m, 'vhostd_device_connected', { device: 'c.net0' })).toBe(0);
    expect(sampleValue(m, 'vhostd_net_tx_frames_total', netA)).toBe(101);
    expect(sampleValue(m, 'vhostd_blk_requests_total', { ...blk, type: 'in' })).toBe(5);
  });

  test('a port in use is refused with a message naming the address; close() frees it', async () => {
    await start();
    const port = server!.port;
    await expect(startMetrics(daemon!, { host: '127.0.0.1', port }, log, { processMetrics: false })).rejects.toThrow(
      `metrics listen 127.0.0.1:${port}: address already in use`,
    );
    await server!.close();
    server = await startMetrics(daemon!, { host: '127.0.0.1', port }, log, { processMetrics: false });
    expect((await scrape(server)).status).toBe(200);
  });
});

/** A TCP port nobody listens on right now (bound on port 0 by the kernel, then released). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe.skipIf(!native.ok)('vhostd with `metrics listen` (the binary)', () => {
  const procs: VhostdProcess[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) {
      await p.stop();
      p.cleanup();
    }
  });

  test('serves /metrics for its devices; a second vhostd on the same address exits 1 naming it', async () => {
    const port = await freePort();
    const conf = `metrics listen "127.0.0.1:${port}"\nswitch "s0" {}\nvm "web" { interface { switch "s0" } }\n`;
    const v = new VhostdProcess(conf);
    procs.push(v);
    await v.start();
    await v.waitLog((l) => l.msg === 'metrics exporter listening', 10_000, 'the exporter');
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    const m = parseExposition(await res.text());
    expect(sampleValue(m, 'vhostd_device_connected', { vm: 'web', device: 'web.net0', socket: v.socket('web') })).toBe(0);
    expect(sampleValue(m, 'vhostd_switch_ports', { switch: 's0' })).toBe(1);
    expect(sampleValue(m, 'process_cpu_seconds_total')).toBeGreaterThan(0);

    const second = new VhostdProcess(conf);
    procs.push(second);
    await second.start();
    const fatal = await second.waitLog((l) => l.msg === 'vhostd failed to start', 10_000, 'the bind failure');
    expect(fatal.reason).toBe(`metrics listen 127.0.0.1:${port}: address already in use`);
    await waitFor(() => second.proc!.exitCode !== null, 'the second vhostd to exit');
    expect(second.proc!.exitCode).toBe(1);
    expect(fs.existsSync(second.socket('web'))).toBe(false);
  });
});
