/**
 * MAC table knobs through the Switch (docs/configuration.md): static entries, deladdr, flush, timeout,
 * maxaddr with fair eviction and the per-port learn limit (static entries never evicted), MAC-move damping, and
 * the control operations (flushDynamic, addStatic, delAddr, entries).
 */
import { describe, expect, test } from 'vitest';
import { LEARN_DAMPED, LEARN_EVICTED, LEARN_FULL, LEARN_MOVED, LEARN_STATIC, MacTable } from '../../../src/net/mac-table.js';
import { BCAST, MA, MB, MC, MD, bytesOf, frameFrom, key, setup } from './veb-helpers.js';

const mac = (i: number) => `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`;

describe('static entries, deladdr, flush', () => {
  test('a static entry forwards, is never learned over or aged, and survives flushDynamic', () => {
    const { sw, ports } = setup(3, { timeoutSec: 8 });
    const [a, b, c] = ports;
    sw.addStatic(MA, a);
    sw.forward(b, frameFrom(bytesOf(BCAST, MA))); // MA seen on b: not learned over
    expect(sw.macTable.lookup(key(MA))).toBe(a.id);
    expect(sw.macTable.learn(key(MA), b.id)).toBe(LEARN_STATIC);
    sw.tick(0);
    sw.tick(100);
    sw.forward(c, frameFrom(bytesOf(MA, MC)));
    expect(a.take()).toEqual([`${BCAST}<${MA}`, `${MA}<${MC}`]);
    expect(b.frames.length).toBe(0);
    sw.forward(b, frameFrom(bytesOf(BCAST, MB)));
    sw.flushDynamic();
    expect(sw.entries()).toEqual([{ mac: MA, port: 'vm1.net0', portId: a.id, ageSec: 0, static: true }]);
    expect(sw.delAddr(MA)).toBe(true);
    expect(sw.delAddr(MA)).toBe(false);
    expect(sw.entries()).toEqual([]);
    expect(() => sw.addStatic(BCAST, a)).toThrow(/unicast/);
    expect(() => sw.addStatic(MA, 'vm9.net0')).toThrow(/no port/);
    sw.addStatic(MD, 'vm2.net0');
    expect(sw.macTable.lookup(key(MD))).toBe(b.id);
  });

  test('deladdr removes a dynamic entry too; entries() lists dynamic ones with ports by name', () => {
    const { sw, ports } = setup(2);
    sw.forward(ports[1], frameFrom(bytesOf(BCAST, MB)));
    expect(sw.entries()).toEqual([{ mac: MB, port: 'vm2.net0', portId: ports[1].id, ageSec: 0, static: false }]);
    expect(sw.delAddr(key(MB))).toBe(true);
    expect(sw.macTable.size).toBe(0);
  });

  test('timeout: dynamic entries go within the configured lifetime', () => {
    const { sw, ports } = setup(2, { timeoutSec: 8 });
    sw.tick(0);
    sw.forward(ports[0], frameFrom(bytesOf(BCAST, MA)));
    sw.tick(4);
    expect(sw.macTable.lookup(key(MA))).toBe(ports[0].id);
    sw.tick(8);
    expect(sw.macTable.lookup(key(MA))).toBe(-1);
    expect(new MacTable().timeoutSec).toBe(240);
  });
});

describe('maxaddr, per-port limit, fair eviction', () => {
  test('full table with eviction: the port holding most addresses loses its oldest; statics never evicted', () => {
    const { sw, ports } = setup(3, { maxAddr: 6, evict: true });
    const [a, b, c] = ports;
    sw.addStatic(MC, c);
    sw.forward(b, frameFrom(bytesOf(BCAST, MB)));
    for (let i = 0; i < 4; i++) sw.forward(a, frameFrom(bytesOf(BCAST, mac(i))));
    expect(sw.macTable.size).toBe(6);
    sw.forward(b, frameFrom(bytesOf(BCAST, MD))); // new on b: evicts a's oldest
    expect(sw.macTable.lookup(key(mac(0)))).toBe(-1);
    expect(sw.macTable.lookup(key(MD))).toBe(b.id);
    expect(sw.counters(a.id)!.macEvicted).toBe(1);
    for (let i = 10; i < 20; i++) sw.forward(a, frameFrom(bytesOf(BCAST, mac(i)))); // a floods: evicts itself
    expect(sw.macTable.lookup(key(MB))).toBe(b.id);
    expect(sw.macTable.lookup(key(MD))).toBe(b.id);
    expect(sw.macTable.lookup(key(MC))).toBe(c.id);
    expect(sw.macTable.size).toBe(6);
  });

  test('without eviction (veb) a full table refuses; the per-port limit caps one port', () => {
    const t = new MacTable({ maxAddr: 100, portMaxAddr: 2 });
    t.learn(key(MA), 0);
    t.learn(key(MB), 0);
    expect(t.learn(key(MC), 0)).toBe(LEARN_FULL);
    t.learn(key(MC), 1);
    expect(t.lookup(key(MC))).toBe(1);
    const e = new MacTable({ maxAddr: 100, portMaxAddr: 2, evict: true });
    e.learn(key(MA), 0);
    e.learn(key(MB), 0);
    expect(e.learn(key(MC), 0)).toBe(LEARN_EVICTED);
    expect(e.lookup(key(MA))).toBe(-1);
    expect(e.portCount(0)).toBe(2);
  });

  test('per-port maxaddr from configurePort', () => {
    const { sw, ports } = setup(2);
    sw.configurePort(ports[0], { maxAddr: 1 });
    sw.forward(ports[0], frameFrom(bytesOf(BCAST, MA)));
    sw.forward(ports[0], frameFrom(bytesOf(BCAST, MC)));
    sw.forward(ports[1], frameFrom(bytesOf(BCAST, MB)));
    sw.forward(ports[1], frameFrom(bytesOf(BCAST, MD)));
    expect(sw.counters(ports[0].id)!.learnTableFull).toBe(1);
    expect(sw.macTable.size).toBe(3);
  });

  test('addStatic into a full table evicts a dynamic entry; refused only when all entries are static', () => {
    const t = new MacTable({ maxAddr: 2 });
    t.learn(key(MA), 0);
    t.learn(key(MB), 1);
    expect(t.addStatic(key(MC), 2)).toBe(true);
    expect(t.size).toBe(2);
    expect(t.addStatic(key(MD), 2)).toBe(true);
    expect(t.addStatic(key(mac(1)), 2)).toBe(false);
  });
});

describe('MAC-move damping', () => {
  test('moves are counted; more than moveDampCount in the window are refused until it ends', () => {
    const { sw, ports } = setup(3, { moveDampCount: 2, moveDampSec: 10 });
    const [a, b, c] = ports;
    sw.tick(100);
    sw.forward(a, frameFrom(bytesOf(BCAST, MA)));
    sw.forward(b, frameFrom(bytesOf(BCAST, MA))); // move 1
    sw.forward(a, frameFrom(bytesOf(BCAST, MA))); // move 2
    sw.forward(b, frameFrom(bytesOf(BCAST, MA))); // damped
    expect(sw.macTable.lookup(key(MA))).toBe(a.id);
    expect(sw.counters(b.id)).toMatchObject({ macMoves: 1, macMoveDamped: 1 });
    expect(sw.counters(a.id)!.macMoves).toBe(1);
    sw.forward(c, frameFrom(bytesOf(MA, MC))); // still delivered to a (pinned)
    expect(a.take().at(-1)).toBe(`${MA}<${MC}`);
    sw.tick(110);
    sw.forward(b, frameFrom(bytesOf(BCAST, MA)));
    expect(sw.macTable.lookup(key(MA))).toBe(b.id);
    const t = new MacTable({ moveDampCount: 0 });
    for (let i = 0; i < 20; i++) expect(t.learn(key(MA), i % 2 === 0 ? 1 : 2)).toBe(i === 0 ? 1 : LEARN_MOVED);
    expect(new MacTable({ moveDampCount: 1 }).learn(key(MA), 1)).not.toBe(LEARN_DAMPED);
  });
});
