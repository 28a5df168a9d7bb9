/**
 * The switch's per-ingress flow cache (Switch.forward, learnAndLookup) never changes a decision: between two frames
 * of one flow, every change of the table or of a port's knobs takes effect on the very next frame. Each test sends
 * the flow at least twice first (so the second frame is a cache hit), changes one thing, and checks the next frame.
 * The last test is differential: random traffic and control operations on two switches, one of which has its cache
 * defeated (MacTable.bump() before every frame), must deliver and count identically.
 */
import { describe, expect, test } from 'vitest';
import { FLOW_BITS, FlowCache } from '../../../src/net/flow-cache.js';
import type { Frame } from '../../../src/net/frame.js';
import { LEARN_KNOWN, LEARN_NEW, MacTable } from '../../../src/net/mac-table.js';
import { PORT_COUNTER_NAMES, type Switch } from '../../../src/net/switch.js';
import { BCAST, MA, MB, MC, CopyPort, bytesOf, frameFrom, key, setup } from './veb-helpers.js';

/** Send `frame` on `port` `n` times (one batch each). */
function send(sw: Switch, port: CopyPort, frame: Frame, n = 1): void {
  for (let i = 0; i < n; i++) {
    sw.forward(port, frame);
    sw.endBatch();
  }
}

/** Frames received per port since the last call, and clear. */
function got(ports: CopyPort[]): number[] {
  return ports.map((p) => {
    const n = p.frames.length;
    p.frames = [];
    return n;
  });
}

/** a (MA), b (MB learned), c; the flow MA → MB from a, sent twice (the second a cache hit). */
function flowSetup(opts = {}): { sw: Switch; ports: CopyPort[]; flow: Frame } {
  const { sw, ports } = setup(3, opts);
  send(sw, ports[1], frameFrom(bytesOf(BCAST, MB)));
  const flow = frameFrom(bytesOf(MB, MA));
  got(ports);
  send(sw, ports[0], flow, 2);
  expect(got(ports)).toEqual([0, 2, 0]);
  return { sw, ports, flow };
}

describe('flow cache: the next frame of a flow sees every change', () => {
  test('a MAC move re-points the flow at once', () => {
    const { sw, ports, flow } = flowSetup();
    send(sw, ports[2], frameFrom(bytesOf(BCAST, MB))); // MB moves to c
    got(ports);
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 1]);
  });

  test('a static entry added for the destination re-points the flow', () => {
    const { sw, ports, flow } = flowSetup();
    sw.addStatic(MB, ports[2]);
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 1]);
  });

  test('a static entry added for an unknown destination turns the flood into unicast', () => {
    const { sw, ports } = setup(3);
    const flow = frameFrom(bytesOf(MC, MA));
    send(sw, ports[0], flow, 2);
    expect(got(ports)).toEqual([0, 2, 2]);
    sw.addStatic(MC, ports[2]);
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 1]);
  });

  test('flush: the flow floods, and its source is learned again by the next frame', () => {
    const { sw, ports, flow } = flowSetup();
    sw.flushDynamic();
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 1, 1]);
    expect(sw.macTable.lookup(key(MA))).toBe(ports[0].id);
  });

  test('deladdr of the destination: the flow floods', () => {
    const { sw, ports, flow } = flowSetup();
    expect(sw.delAddr(MB)).toBe(true);
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 1, 1]);
  });

  test('an aged destination: the flow floods; its busy source keeps being refreshed and never ages', () => {
    const { sw, ports } = setup(3, { timeoutSec: 8 });
    sw.tick(0);
    send(sw, ports[1], frameFrom(bytesOf(BCAST, MB)));
    const flow = frameFrom(bytesOf(MB, MA));
    got(ports);
    send(sw, ports[0], flow, 2);
    sw.tick(4); // rotation: MB still known (seen in the last generation)
    send(sw, ports[0], flow, 2);
    expect(got(ports)).toEqual([0, 4, 0]);
    sw.tick(8); // rotation: MB (silent since t=0) is gone
    send(sw, ports[0], flow, 2);
    expect(got(ports)).toEqual([0, 2, 2]);
    expect(sw.macTable.lookup(key(MB))).toBe(-1);
    for (let t = 12; t <= 40; t += 4) {
      sw.tick(t);
      send(sw, ports[0], flow, 2);
    }
    expect(sw.macTable.lookup(key(MA))).toBe(ports[0].id); // refreshed once per generation by the flow itself
  });

  test('the destination port removed and its id reused by a new port: the flow floods, never reaches the newcomer alone', () => {
    const { sw, ports, flow } = flowSetup();
    const oldId = ports[1].id;
    sw.removePort(ports[1]);
    const d = new CopyPort('vm4.net0');
    expect(sw.addPort(d)).toBe(oldId);
    send(sw, ports[0], flow);
    expect(got([ports[0], ports[2], d])).toEqual([0, 1, 1]);
  });

  test('the ingress port made locked: the next frame from a source without a static entry is dropped', () => {
    const { sw, ports, flow } = flowSetup();
    sw.configurePort(ports[0], { locked: true });
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 0]);
    expect(sw.counters(ports[0].id)?.dropLocked).toBe(1);
  });

  test('a locked port: deleting its static entry drops the next frame; adding it back passes the one after', () => {
    const { sw, ports } = setup(3);
    sw.addStatic(MA, ports[0]);
    sw.addStatic(MB, ports[1]);
    sw.configurePort(ports[0], { locked: true });
    const flow = frameFrom(bytesOf(MB, MA));
    send(sw, ports[0], flow, 2);
    expect(got(ports)).toEqual([0, 2, 0]);
    sw.delAddr(MA);
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 0]);
    sw.addStatic(MA, ports[0]);
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 1, 0]);
    sw.addStatic(MA, ports[2]); // re-pointed to another port: this one's frames from MA are no longer allowed
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 0]);
    expect(sw.counters(ports[0].id)?.dropLocked).toBe(2);
  });

  test('protected domains and VLAN membership set between two frames drop the next one', () => {
    const { sw, ports, flow } = flowSetup();
    sw.configurePort(ports[0], { protected: [3] });
    sw.configurePort(ports[1], { protected: [3] });
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 0]);
    expect(sw.counters(ports[0].id)?.dropProtected).toBe(1);
    sw.configurePort(ports[1], { protected: [] });
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 1, 0]);
    sw.configurePort(ports[1], { untagged: 2 }); // b leaves VLAN 1, where a's untagged frames are
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 0]);
    expect(sw.counters(ports[1].id)?.dropTaggedOut).toBe(1);
  });

  test('learning switched on at the ingress port: the next frame learns its source', () => {
    const { sw, ports } = setup(3);
    sw.configurePort(ports[0], { learn: false });
    const flow = frameFrom(bytesOf(MB, MA));
    send(sw, ports[0], flow, 2);
    expect(sw.macTable.lookup(key(MA))).toBe(-1);
    sw.configurePort(ports[0], { learn: true });
    send(sw, ports[0], flow);
    expect(sw.macTable.lookup(key(MA))).toBe(ports[0].id);
  });

  test('a rule added between two frames blocks the next one', () => {
    const { sw, ports, flow } = flowSetup();
    sw.addRule(ports[0], { action: 'block', dir: 'in', dst: key(MB) });
    send(sw, ports[0], flow);
    expect(got(ports)).toEqual([0, 0, 0]);
  });
});

describe('flow cache: a port changing the table during a frame', () => {
  test('a span port whose deliver() re-points the destination: that frame already goes the new way', () => {
    const { sw, ports, flow } = flowSetup();
    let onDeliver: (() => void) | undefined;
    class HookPort extends CopyPort {
      override deliver(frame: Frame): boolean {
        const f = onDeliver;
        onDeliver = undefined;
        f?.();
        return super.deliver(frame);
      }
    }
    const span = new HookPort('span0');
    sw.addPort(span);
    sw.configurePort(span, { span: true });
    send(sw, ports[0], flow, 2); // cached again after the port changes
    expect(got([...ports, span])).toEqual([0, 2, 0, 2]);
    onDeliver = () => sw.addStatic(MB, ports[2]); // runs during the span copy, before the lookup step
    send(sw, ports[0], flow);
    expect(got([...ports, span])).toEqual([0, 0, 1, 1]);
    onDeliver = () => sw.delAddr(MB);
    send(sw, ports[0], flow);
    expect(got([...ports, span])).toEqual([0, 1, 1, 1]);
    send(sw, ports[0], flow);
    expect(got([...ports, span])).toEqual([0, 1, 1, 1]);
  });
});

describe('flow cache: the key is the whole (source, destination) pair', () => {
  test('addresses that differ from a cached flow in either half of either MAC never take its decision', () => {
    const { sw, ports } = setup(3);
    sw.addStatic(MA, ports[0]);
    sw.addStatic(MB, ports[1]);
    sw.configurePort(ports[0], { locked: true });
    const flow = frameFrom(bytesOf(MB, MA));
    const hex = (i: number) => i.toString(16).padStart(2, '0');
    let variants = 0;
    // Hundreds of variants, so that some land in the cached flow's slot whatever the slot hash is.
    for (let i = 1; i <= 300; i++) {
      const upper = `02:${hex(i >> 8)}:${hex(i & 0xff)}`;
      const lower = `${hex(i >> 8)}:${hex(i & 0xff)}:0a`;
      for (const [src, dst] of [
        [`${upper}:00:00:0a`, MB], // source: other upper half, same lower half (MA = 02:00:00 + 00:00:0a)
        [`02:00:00:${lower}`, MB], // source: same upper half, other lower half
      ]) {
        send(sw, ports[0], flow, 2);
        expect(got(ports)).toEqual([0, 2, 0]);
        send(sw, ports[0], frameFrom(bytesOf(dst, src))); // not MA: a locked port drops it
        expect(got(ports)).toEqual([0, 0, 0]);
        variants++;
      }
      for (const dst of [`${upper}:00:00:0b`, `02:00:00:${lower.slice(0, 6)}0b`]) {
        send(sw, ports[0], flow, 2);
        expect(got(ports)).toEqual([0, 2, 0]);
        send(sw, ports[0], frameFrom(bytesOf(dst, MA))); // not MB: unknown, flooded
        expect(got(ports)).toEqual([0, 1, 1]);
        variants++;
      }
    }
    expect(sw.counters(ports[0].id)?.dropLocked).toBe(variants / 2);
  });
});

describe('flow cache: per-frame learn outcomes are not cached', () => {
  test('table full: every frame of the flow counts learnTableFull', () => {
    const { sw, ports } = setup(3, { maxAddr: 1 });
    send(sw, ports[1], frameFrom(bytesOf(BCAST, MB)));
    got(ports);
    send(sw, ports[0], frameFrom(bytesOf(MB, MA)), 3);
    expect(sw.counters(ports[0].id)?.learnTableFull).toBe(3);
    expect(got(ports)).toEqual([0, 3, 0]);
  });

  test('damped moves: every refused move is counted', () => {
    const { sw, ports } = setup(3, { moveDampCount: 1, moveDampSec: 10 });
    sw.tick(0);
    send(sw, ports[0], frameFrom(bytesOf(BCAST, MA)));
    send(sw, ports[1], frameFrom(bytesOf(BCAST, MA))); // one move allowed
    const flow = frameFrom(bytesOf(MC, MA));
    send(sw, ports[0], flow, 3); // refused moves back to a
    expect(sw.counters(ports[0].id)?.macMoveDamped).toBe(3);
    expect(sw.macTable.lookup(key(MA))).toBe(ports[1].id);
  });
});

describe('FlowCache', () => {
  test('a slot answers only for its exact MAC pair and version; a store overwrites it', () => {
    const c = new FlowCache();
    const f = frameFrom(bytesOf(MB, MA));
    f.dstHi = 0x020000;
    f.dstLo = 0x00000b;
    f.srcHi = 0x020000;
    f.srcLo = 0x00000a;
    const slot = c.slot(f);
    expect(slot).toBeGreaterThanOrEqual(0);
    expect(slot).toBeLessThan(1 << FLOW_BITS);
    expect(c.hit(f, slot, 0)).toBe(false); // empty
    c.store(f, slot, 7, 3);
    expect(c.hit(f, slot, 7)).toBe(true);
    expect(c.out(slot)).toBe(3);
    expect(c.hit(f, slot, 8)).toBe(false); // other version
    for (const k of ['dstHi', 'dstLo', 'srcHi', 'srcLo'] as const) {
      const v = f[k];
      f[k] = v ^ 1;
      expect(c.hit(f, slot, 7)).toBe(false);
      f[k] = v;
    }
    c.store(f, slot, 9, -1);
    expect(c.hit(f, slot, 7)).toBe(false);
    expect(c.hit(f, slot, 9)).toBe(true);
    expect(c.out(slot)).toBe(-1);
  });
});

describe('MacTable.version', () => {
  test('changes on every mutation that can change an answer, not on a refresh', () => {
    const t = new MacTable({ maxAddr: 8, timeoutSec: 8 });
    const A = key(MA);
    const B = key(MB);
    let v = t.version;
    const changed = (): boolean => {
      const c = t.version !== v;
      v = t.version;
      return c;
    };
    expect(t.learn(A, 0)).toBe(LEARN_NEW);
    expect(changed()).toBe(true);
    expect(t.learn(A, 0)).toBe(LEARN_KNOWN);
    expect(changed()).toBe(false);
    t.learn(A, 1); // move
    expect(changed()).toBe(true);
    t.tick(0);
    expect(changed()).toBe(false);
    t.tick(4); // rotation
    expect(changed()).toBe(true);
    expect(t.learn(A, 1)).toBe(LEARN_KNOWN); // refresh into the new shadow
    expect(changed()).toBe(false);
    t.addStatic(B, 2);
    expect(changed()).toBe(true);
    t.delete(B);
    expect(changed()).toBe(true);
    t.delete(B); // nothing to delete
    expect(changed()).toBe(false);
    t.remove(1);
    expect(changed()).toBe(true);
    t.flush();
    expect(changed()).toBe(true);
    t.flushAll();
    expect(changed()).toBe(true);
    t.setLimits({ maxAddr: 4 });
    expect(changed()).toBe(true);
    t.setPortLimit(0, 2);
    expect(changed()).toBe(true);
    t.bump();
    expect(changed()).toBe(true);
  });
});

describe('flow cache: differential against a switch whose cache never hits', () => {
  test('random traffic (tagged too), moves, statics, flushes, aging, VLANs, span, rules and port knobs: same deliveries and counters', () => {
    const N = 5;
    const macs = Array.from({ length: 40 }, (_, i) => `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`);
    const frames = new Map<string, Frame>();
    const frameOf = (dst: string, src: string, vid: number): Frame => {
      const k = `${dst}<${src}@${vid}`;
      let f = frames.get(k);
      if (f === undefined) {
        f = frameFrom(bytesOf(dst, src, { tags: vid < 0 ? [] : [vid], etype: vid === 7 ? 0x88b5 : 0x0800 }));
        frames.set(k, f);
      }
      return f;
    };
    const opts = { maxAddr: 30, timeoutSec: 8, moveDampCount: 3, moveDampSec: 5 };
    const cached = setup(N, opts);
    const plain = setup(N, opts);
    let seed = 0x1234567;
    const rnd = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    let now = 0;
    for (const s of [cached, plain]) s.sw.tick(now);
    for (let step = 0; step < 40_000; step++) {
      const r = rnd(40) !== 0 ? 0 : 940 + rnd(60); // 39 in 40 steps a frame, else one of the control operations
      // Each side gets the same operation; `plain` has its cache defeated before every frame.
      const op = (s: { sw: Switch; ports: CopyPort[] }, a: number, b: number, c: number): void => {
        const sw = s.sw;
        if (r < 940) {
          // Mostly local flows (each port sends from 2 MACs of its own to 5 others), so the cache hits; sometimes
          // any source (moves) or destination.
          const port = c % N;
          const src = a % 61 === 0 ? macs[b % macs.length] : macs[port * 2 + (a % 2)];
          const dst = a % 17 === 0 ? BCAST : b % 29 === 0 ? macs[a % macs.length] : macs[b % 5];
          const vid = b % 5 === 0 ? [0, 5, 7, 9][a % 4] : -1; // mostly untagged; priority-tagged, VID 5, 7 (non-IP), 9
          if (s === plain) sw.macTable.bump();
          sw.forward(s.ports[port], frameOf(dst, src, vid));
          if (a % 7 === 0) sw.endBatch();
        } else if (r < 950) sw.addStatic(macs[a % 12], s.ports[c % N]); // at most 12 of the 30 entries static
        else if (r < 955) sw.delAddr(macs[a % macs.length]);
        else if (r < 958) sw.flushDynamic();
        else if (r < 975) sw.tick(now);
        else if (r < 985) sw.configurePort(s.ports[c % N], { locked: a % 2 === 0 });
        else if (r < 990) sw.configurePort(s.ports[c % N], { learn: a % 3 !== 0 });
        else if (r < 993) sw.configurePort(s.ports[c % N], { protected: a % 2 === 0 ? [1] : [] });
        else if (r < 995) sw.configurePort(s.ports[c % N], { untagged: [1, 5, 'none' as const][a % 3], tagged: a % 2 === 0 ? [5, 7, 9] : [9] });
        else if (r < 997) sw.configurePort(s.ports[c % N], { blockNonIp: a % 2 === 0 });
        else if (r < 998) sw.configurePort(s.ports[c % N], { span: a % 4 === 0 });
        else if (r < 999) sw.addRule(s.ports[c % N], { action: a % 2 === 0 ? 'block' : 'pass', dir: a % 3 === 0 ? 'out' : 'in', src: key(macs[b % 8]) });
        else sw.configurePort(s.ports[c % N], { discover: a % 2 === 0 });
      };
      if (r >= 958 && r < 975) now += 1 + rnd(3);
      const a = rnd(1 << 20);
      const b = rnd(1 << 20);
      const c = rnd(1 << 20);
      op(cached, a, b, c);
      op(plain, a, b, c);
      for (let i = 0; i < N; i++) {
        const x = cached.ports[i].take();
        const y = plain.ports[i].take();
        if (x.join() !== y.join()) expect({ step, port: i, got: x }).toEqual({ step, port: i, got: y });
      }
    }
    for (const s of [cached, plain]) s.sw.endBatch();
    for (let i = 0; i < N; i++) {
      const x = cached.sw.counters(cached.ports[i].id);
      const y = plain.sw.counters(plain.ports[i].id);
      for (const n of PORT_COUNTER_NAMES) expect({ port: i, n, v: x?.[n] }).toEqual({ port: i, n, v: y?.[n] });
    }
    expect(cached.sw.entries()).toEqual(plain.sw.entries());
  });
});
